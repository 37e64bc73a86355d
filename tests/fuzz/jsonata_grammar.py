"""Random JSONata expressions: valid syntax by construction, any behaviour at run time
(type errors, division by zero, endless recursion, deep results…), and mutated presets."""

from __future__ import annotations

import json
import string

from hypothesis import strategies as st

from core.inference.custom_api import PRESETS
from tests.fuzz.strategies import TRICKY

FIELDS = (
    "messages",
    "N",
    "seq_len",
    "temperature",
    "choices",
    "message",
    "content",
    "generated_text",
    "role",
    "a",
    "b",
    "$",
    "$$",
    "$model",
    "$x",
)

numbers = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.sampled_from(["0", "1.5", "-0.5", "1e3", "2e-3", "9007199254740993"]),
)
strings = st.text(alphabet=string.ascii_letters + string.digits + " ,.", max_size=8).map(json.dumps)
# Linear-time patterns only: jsonata-python cannot stop a backtracking regex (see
# test_fuzz_custom_api.test_a_backtracking_regex_escapes_the_time_bound).
regexes = st.sampled_from(["/a+/", "/[0-9]+/i", "/^x/", "/,/", "/[a-z]{2}/m"])
atoms = st.one_of(
    numbers,
    strings,
    st.sampled_from(["true", "false", "null", "[]", "{}", "$now()"]),
    st.sampled_from(FIELDS),
    st.sampled_from(["0", "1", "5", "100", "10000", "100000"]).map(lambda n: f"[1..{n}]"),
)

UNARY = (
    "$string({})",
    "$length($string({}))",
    "$count({})",
    "$sum({})",
    "$max({})",
    "$keys({})",
    "$sort({})",
    "$reverse({})",
    "$distinct({})",
    "$number({})",
    "$exists({})",
    "$type({})",
    "$boolean({})",
    "$not({})",
    "$abs({})",
    "$floor({})",
    "$sqrt({})",
    "$round({}, 2)",
    "$power({}, 3)",
    "$uppercase($string({}))",
    "$trim($string({}))",
    "$pad($string({}), 6, '#')",
    "$substring($string({}), 1, 3)",
    "$split($string({}), ',')",
    "$join($map({}, $string), ',')",
    "$spread({})",
    "$merge([{}])",
    "$lookup({}, 'a')",
    "$formatNumber({}, '#,##0.00')",
    "$formatBase({}, 2)",
    "$fromMillis({})",
    "$toMillis($string({}))",
    "$base64encode($string({}))",
    "$encodeUrlComponent($string({}))",
    "$eval($substring($string({}), 0, 200))",  # long text: see test_a_single_slow_step_…
    "$each({}, function($v, $k) {{ $k }})",
    "$sift({}, function($v) {{ true }})",
    "$map({}, function($v, $i) {{ $i }})",
    "$filter({}, function($v) {{ $v }})",
    "$single({})",
    "$reduce({}, function($a, $b) {{ $a & $b }})",
    "$reduce({}, function($acc, $v) {{ {{'a': $acc}} }}, {{}})",
    "$contains($string({}), /a+/)",
    "$match($string({}), /[0-9]+/)",
    "$replace($string({}), /a+/, 'b')",
    "$string({}, true)",
    "({})[0]",
    "({})[-1]",
    "({}).content",
    "({}).*",
    "({}).**",
    "({})#$i",
    "(({})^(a))",  # bare, "x^(a) / 2" reads "/ 2" as a regex (a jsonata-python tokenizer quirk)
    "-({})",
    "[{}]",
)
BINARY = (
    "({} + {})",
    "({} - {})",
    "({} * {})",
    "({} / {})",
    "({} % {})",
    "({} = {})",
    "({} != {})",
    "({} < {})",
    "({} >= {})",
    "({} and {})",
    "({} or {})",
    "({} & {})",
    "({} in {})",
    "({} ? {} : null)",
    "[{}, {}]",
    "{{'k': {}, 'j': {}}}",
    "({})[{}]",
    "({})[$ = {}]",
    "$append({}, {})",
    "$zip({}, {})",
    "$string({}) ~> $substringBefore($string({}))",
    "($x := {}; {})",
    "$map({}, function($v) {{ {} }})",
    "$reduce([1..100], function($a, $b) {{ {} }}, {})",
    "$sort({}, function($l, $r) {{ {} }})",
)
LOOPS = st.sampled_from(
    [
        "($f := function($n) { $f($n) }; $f(1))",
        "($f := function($n) { $n > 0 ? 1 + $f($n - 1) : 0 }; $f(100000))",
        "($f := function($n) { $n > 0 ? $f($n - 1) : 0 }; $f(5000))",
        "($w := function() { $w() }; $w())",
        "$reduce([1..100000], function($a, $b) { $a + $b })",
        "$sort([1..100000], function($l, $r) { $l < $r })",
    ]
)


def _expressions() -> st.SearchStrategy[str]:
    def extend(kids: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.builds(str.format, st.sampled_from(UNARY), kids),
            st.builds(lambda f, a, b: f.format(a, b), st.sampled_from(BINARY), kids, kids),
        )

    tree = st.recursive(atoms, extend, max_leaves=6)
    return st.one_of(tree, tree, tree, tree, LOOPS)  # a loop in about one case in five


expressions = _expressions()


@st.composite
def mutated_presets(draw: st.DrawFn) -> str:
    """A preset expression with a slice cut out or a tricky piece put in: broken syntax."""
    texts = [t for p in PRESETS.values() for t in (p.request_expression, p.response_expression)]
    text = draw(st.sampled_from([t for t in texts if t]))
    at = draw(st.integers(0, len(text)))
    if draw(st.booleans()):
        return text[:at] + text[at + draw(st.integers(1, 12)) :]
    piece = draw(st.one_of(st.sampled_from(TRICKY), st.sampled_from("()[]{}$.,:;?\"'/\\|&~")))
    return text[:at] + piece + text[at:]


any_expression = st.one_of(
    expressions, expressions, mutated_presets(), st.text(max_size=30), st.sampled_from(TRICKY)
)
