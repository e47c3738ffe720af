"""fused_lstm's tests, a package so that the tests and the benchmark scripts import its helpers
(tests.lstm_testing, tests.differential, tests.soak) by name, without sys.path edits."""
