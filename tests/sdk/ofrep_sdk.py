"""Evaluates flags through the OpenFeature Python SDK and its OFREP provider (from
PyPI) against a running `rollwave relay --flags tests/sdk/flags.json`.

    python ofrep_sdk.py http://127.0.0.1:8016

Prints one line per check and exits 1 on the first that fails.
"""

import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

api.set_provider(OFREPProvider(sys.argv[1], timeout=10.0))
client = api.get_client()

ada = EvaluationContext(
    targeting_key="user-1",
    attributes={"email": "ada@example.com", "plan": "premium", "country": "CA"},
)
bob = EvaluationContext(targeting_key="user-2", attributes={"email": "bob@elsewhere.org"})


def check(what, details, value, variant, reason, error_code=None):
    got = (details.value, details.variant, details.reason, details.error_code)
    want = (value, variant, reason, error_code)
    if got != want or type(details.value) is not type(value):
        print(f"FAIL {what}: got {got!r} ({type(details.value).__name__}), want {want!r}")
        sys.exit(1)
    print(f"ok {what}: {details.value!r} variant={details.variant} reason={details.reason}")


check("boolean, targeted", client.get_boolean_details("new-checkout", False, ada), True, "on", Reason.TARGETING_MATCH)
check("boolean, default", client.get_boolean_details("new-checkout", True, bob), False, "off", Reason.DEFAULT)
check("string", client.get_string_details("theme", "green", ada), "red", "red", Reason.TARGETING_MATCH)
check("integer", client.get_integer_details("max-items", 1, ada), 50, "many", Reason.TARGETING_MATCH)
check("float", client.get_float_details("discount", 0.5, bob), 0.15, "some", Reason.STATIC)
check(
    "object",
    client.get_object_details("limits", {}, bob),
    {"requests": 100, "burst": 20, "tiers": ["free", "pro"]},
    "default",
    Reason.STATIC,
)

missing = client.get_boolean_details("no-such-flag", True, ada)
check("missing flag", missing, True, None, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)

# A type the flag does not have: the SDK keeps the caller's default.
mismatch = client.get_integer_details("theme", 7, ada)
check("type mismatch", mismatch, 7, None, Reason.ERROR, ErrorCode.TYPE_MISMATCH)
print("all SDK checks passed")
