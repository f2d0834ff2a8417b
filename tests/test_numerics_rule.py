"""Every float comparison in tests/ goes through tests/numerics.py: this parses the suite and names each
file:line that compares floats another way.

Flagged, outside tests/numerics.py (and this file's planted examples):
- calls to `assert_close`, `allclose`, `isclose` or `approx` that are not tests.numerics' own (e.g.
  `torch.testing.assert_close`, `torch.allclose`, `math.isclose`, `pytest.approx`);
- keyword arguments `rtol`, `atol`, `rel`, `abs` given a nonzero number literal (name the bound in
  tests/numerics.py instead), and a tolerance-like literal (a float 0 < |v| < 0.1) passed to any function
  whose name starts with `assert` (a local helper taking its bound by position);
- a tolerance-like literal bound to a name that says it is a bound (`tol`, `atol`, `tolerance`, `bound`, ...;
  not `eps`, a hyperparameter);
- ordering comparisons (<, <=, >, >=) with a tolerance-like literal, a float 0 < |v| < 0.1, in an operand.
Integer and count comparisons, and ranges such as `0 < x < 1`, pass. Multi-line strings that parse as Python
(scripts a test runs in a subprocess) are checked too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
NUMERICS_MODULE = "tests.numerics"
FLOAT_CALLS = {"assert_close", "allclose", "isclose", "approx"}
TOLERANCE_KEYWORDS = {"rtol", "atol", "rel", "abs"}
ORDERINGS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
BOUND_NAME = re.compile(r"(^|_)(r?tol|atol|tolerance|bound|threshold|margin)($|_)", re.IGNORECASE)


def _number(node: ast.AST) -> float | None:
    """The value of a number literal (with an optional sign), else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    return None


def _tolerance_like(node: ast.AST) -> bool:
    """`node` holds a float literal 0 < |v| < 0.1 (ints, 0 and values such as 0.5 or 1.0 are no tolerance)."""
    return any(
        isinstance(n, ast.Constant) and isinstance(n.value, float) and 0 < abs(n.value) < 0.1 for n in ast.walk(node)
    )


def _numerics_imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Names bound to tests.numerics' functions, and names bound to the module itself."""
    functions, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                if module in (NUMERICS_MODULE, ".numerics", "..numerics"):
                    functions.add(alias.asname or alias.name)
                elif module in ("tests", ".", "..") and alias.name == "numerics":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname for a in node.names if a.name == NUMERICS_MODULE and a.asname)
    return functions, modules


def _embedded_scripts(tree: ast.Module):
    """(line, source) of the multi-line string literals that parse as Python code."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" in node.value.strip():
            try:
                script = ast.parse(node.value)
            except SyntaxError:
                continue
            if any(not isinstance(s, ast.Expr) or isinstance(s.value, ast.Call) for s in script.body):
                yield node.lineno, node.value


def violations(source: str, filename: str = "<string>", first_line: int = 1) -> list[str]:
    """`file:line: what` for each float comparison in `source` that bypasses tests/numerics.py."""
    tree = ast.parse(source, filename)
    ast.increment_lineno(tree, first_line - 1)
    functions, modules = _numerics_imports(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            ours = (isinstance(func, ast.Name) and func.id in functions) or (
                isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in modules
            )
            if name in FLOAT_CALLS and not ours:
                found.append(f"{filename}:{node.lineno}: {ast.unparse(func)}() outside tests.numerics")
            for keyword in node.keywords:
                if keyword.arg in TOLERANCE_KEYWORDS and _number(keyword.value):
                    found.append(f"{filename}:{node.lineno}: {keyword.arg}={ast.unparse(keyword.value)}, a bare bound")
            if (name or "").startswith("assert") and name not in FLOAT_CALLS and any(_tolerance_like(a) for a in [*node.args, *node.keywords]):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}, a bare tolerance")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and _tolerance_like(node.value):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            if any(BOUND_NAME.search(n) for n in names):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}, a bare bound")
        elif isinstance(node, ast.Compare) and any(isinstance(op, ORDERINGS) for op in node.ops):
            if any(_tolerance_like(operand) for operand in [node.left, *node.comparators]):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}, a bare tolerance")
    for line, script in _embedded_scripts(tree):
        found += violations(script, filename, line)
    return sorted(set(found), key=lambda line: int(line.split(":")[1]))


def test_the_suite_compares_floats_only_through_tests_numerics():
    found = []
    exempt = {TESTS / "numerics.py", Path(__file__).resolve()}  # the rule itself; this file's planted examples
    for path in sorted(TESTS.rglob("*.py")):
        if path not in exempt:
            found += violations(path.read_text(), str(path.relative_to(TESTS.parent)))
    assert not found, "float comparisons outside tests/numerics.py (use its helpers and bounds):\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "assert (a - b).abs().max() <= 1e-5 * scale",
        "assert moved > 1e-3",
        "assert 2e-2 > err",
        "assert err < -0.01 + x",
        "torch.testing.assert_close(a, b)",
        "assert torch.allclose(a, b)",
        "assert math.isclose(a, b)",
        "assert x == pytest.approx(1.0)",
        "from pytest import approx\nassert x == approx(1.0)",
        "check(a, b, rtol=1e-5)",
        "check(a, b, atol=-1)",
        "assert_matches(a, b, rtol=0.5)",
        "from tests.numerics import assert_matches\nassert_matches(a, b, 1e-3)",
        "assert_scaled(got, ref, 1e-5, 'loss')",
        'SCRIPT = """\nimport torch\ntorch.testing.assert_close(a, b)\n"""',
        "atol = 1e-6",
        "loss_tol: float = 2e-3",
    ],
)
def test_the_rule_names_a_bare_float_comparison(source):
    """Each planted source is reported once, at its offending (last code) line."""
    lines = [i for i, text in enumerate(source.split("\n"), start=1) if text.strip() != '"""']
    assert [line.split(":")[1] for line in violations(source, "planted.py")] == [str(lines[-1])]


@pytest.mark.parametrize(
    "source",
    [
        "assert 0 < x < 1",
        "assert 0.5 < ratio <= 1.0",
        "assert len(rows) >= 3 and count > 0",
        "assert steps < 10",
        "from tests.numerics import approx, assert_matches\nassert x == approx(1e-3)\nassert_matches(a, b)",
        "from tests import numerics\nassert_close = numerics.assert_matches\nnumerics.approx(1.0)",
        "from tests.numerics import FLOAT32_RTOL, assert_matches\nassert_matches(a, b, rtol=10 * FLOAT32_RTOL)",
        "torch.testing.assert_close_ish = None",
        "f(x, rtol=0, atol=0)",
        "assert torch.equal(a, b)",
        "lr = 1e-3\nassert_matches(a, b, msg='step 0.01')",
        "assert_differs(a, b, factor=10)",
        "beta1, beta2, eps = 0.9, 0.999, 1e-8",
        'doc = """Compares within 1e-5.\nSee the notes: x < 1e-3 there."""',
    ],
)
def test_the_rule_passes_counts_ranges_and_its_own_helpers(source):
    assert violations(source) == []
