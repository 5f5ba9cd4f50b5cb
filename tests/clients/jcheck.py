"""Checks a grpcurl answer read from stdin. Each argument is a Python expression over it: `r`
is the answer (the first message of a stream) and `rs` every message. Exits 1, showing the
answer, at the first expression that is not true.

    grpcurl ... | python3 jcheck.py 'r["decision"] == "DECISION_ALLOW"'
"""

import json
import sys


def messages(text):
    """grpcurl prints a stream as JSON objects one after another, not as one array."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return found
        message, at = decoder.raw_decode(text, at)
        found.append(message)


def main():
    text = sys.stdin.read()
    try:
        rs = messages(text)
    except json.JSONDecodeError as e:
        print(f"not JSON ({e}):\n{text}", file=sys.stderr)
        return 1
    scope = {"r": rs[0] if rs else {}, "rs": rs}
    for expression in sys.argv[1:]:
        try:
            holds = eval(expression, scope)  # the expressions are the test's own, never input
        except (KeyError, IndexError, TypeError) as e:
            holds, expression = False, f"{expression} ({type(e).__name__}: {e})"
        if not holds:
            print(f"not true: {expression}\n{text}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
