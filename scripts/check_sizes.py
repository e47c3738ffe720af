"""Fails when a source file or a function outgrows what a reader can hold at once.

Limits (CONTRIBUTING.md, "Style"): source files up to MAX_FILE_LINES lines, functions up to
MAX_FUNCTION_LINES (Python: by the AST; C++/CUDA: a brace-matching scan that counts each block
opened at namespace or class scope as one function, lambdas inside it included). Split by
responsibility rather than raising a limit.
"""

import ast
import pathlib
import re
import subprocess
import sys

MAX_FILE_LINES = 620
MAX_FUNCTION_LINES = 100
SOURCE_SUFFIXES = {".py", ".cpp", ".h", ".cu", ".cuh"}
CPP_SUFFIXES = {".cpp", ".h", ".cu", ".cuh"}


def python_functions(path, text):
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.lineno, node.end_lineno - node.lineno + 1, node.name


def _code_only(line):
    line = re.sub(r"//.*", "", line)
    line = re.sub(r"'(\\.|[^'])'", "''", line)
    return re.sub(r'"(\\.|[^"])*"', '""', line)


def cpp_functions(path, text):
    """Blocks opened directly at namespace/class/struct scope (or at file scope): functions."""
    lines = text.splitlines()
    scopes = []  # (kind, first line) of each open brace
    in_block_comment = False
    for number, raw in enumerate(lines, start=1):
        line = raw
        if in_block_comment:
            if "*/" not in line:
                continue
            line = line.split("*/", 1)[1]
            in_block_comment = False
        line = re.sub(r"/\*.*?\*/", "", _code_only(line))
        if "/*" in line:
            line, in_block_comment = line.split("/*", 1)[0], True
        prefix = ""
        for char in line:
            if char == "{":
                head = (" ".join(lines[max(0, number - 3):number - 1]) + " " + prefix).strip()
                if re.search(r"\bnamespace\b[\w\s:]*$", head):
                    kind = "scope"
                elif re.search(r"\b(struct|class|union)\b[^;()]*$", head):
                    kind = "scope"
                else:
                    kind = "block"
                scopes.append((kind, number))
                prefix = ""
            elif char == "}":
                kind, start = scopes.pop()
                if kind == "block" and all(k == "scope" for k, _ in scopes):
                    yield start, number - start + 1, lines[start - 1].strip()[:60]
                prefix = ""
            else:
                prefix += char


def tracked_sources(root):
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                           check=True).stdout.split()
    return [root / f for f in files if pathlib.Path(f).suffix in SOURCE_SUFFIXES
            and (root / f).exists()]


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    problems = []
    for path in tracked_sources(root):
        text = path.read_text()
        rel = path.relative_to(root)
        if text.count("\n") > MAX_FILE_LINES:
            problems.append(f"{rel}: {text.count(chr(10))} lines (limit {MAX_FILE_LINES})")
        functions = cpp_functions if path.suffix in CPP_SUFFIXES else python_functions
        for line, length, name in functions(path, text):
            if length > MAX_FUNCTION_LINES:
                problems.append(f"{rel}:{line}: {name}: {length} lines "
                                f"(limit {MAX_FUNCTION_LINES})")
    for problem in problems:
        print(problem)
    if problems:
        sys.exit(1)
    print("scripts/check_sizes.py: every file and function within the limits")


if __name__ == "__main__":
    main()
