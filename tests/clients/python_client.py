"""The Python example client (examples/python/posture_client.py) against a real
`posture serve --demo` at the address given: health, CheckAccess, ReportInventory and
WatchCompliance, whose stream delivers the decision a report changed. Run by python.sh."""

import queue
import sys
import threading

import grpc
from posture.v1 import compliance_pb2, inventory_pb2
from posture_client import PostureClient, healthy_report, timestamp

ALLOW, DENY = compliance_pb2.DECISION_ALLOW, compliance_pb2.DECISION_DENY
results = {"passed": 0, "failed": 0}


def check(what, holds, detail=""):
    if holds:
        results["passed"] += 1
    else:
        results["failed"] += 1
        print(f"FAIL {what} {detail}", file=sys.stderr)


def codes(answer):
    return [r.code for r in answer.reasons]


def fails_with(code, call):
    try:
        call()
    except grpc.RpcError as e:
        return e.code() == code
    return False


def main(addr):
    gateway = PostureClient(addr, "demo-gateway")
    partner = PostureClient(addr, "demo-partner")
    anonymous = PostureClient(addr)

    check("health of the server", anonymous.health() == "SERVING")
    check("health of ComplianceService", anonymous.health("posture.v1.ComplianceService") == "SERVING")

    ada = gateway.check_access("ada", "mac-ada")
    check("ada is let in", ada.decision == ALLOW and codes(ada) == ["COMPLIANT"], ada)
    bob = gateway.check_access("bob", "mac-bob")
    check("bob is denied", bob.decision == DENY and "NONCOMPLIANT" in codes(bob), bob)
    check(
        "no credential: UNAUTHENTICATED",
        fails_with(grpc.StatusCode.UNAUTHENTICATED, lambda: anonymous.check_access("ada", "mac-ada")),
    )
    check(
        "the partner may not ask: PERMISSION_DENIED",
        fails_with(grpc.StatusCode.PERMISSION_DENIED, lambda: partner.check_access("ada", "mac-ada")),
    )

    # Watch Bob's Mac from the revision before the report: its change arrives whether the stream
    # starts before the report (live) or after it (in the snapshot).
    stream = gateway.watch_compliance(from_revision=bob.revision, device_ids=["mac-bob"], timeout=30)
    events = queue.Queue()

    def read():
        try:
            for event in stream:
                events.put(event)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                events.put(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    report = partner.report_inventory([healthy_report("mac-bob", "bob", "C02BOB0001")])
    check("the report is accepted", report.accepted == 1 and report.results[0].changed, report)
    check("the report's revision follows", report.revision == bob.revision + 1, report)
    older = healthy_report("mac-bob", "bob", "C02BOB0001", last_check_in=timestamp(seconds_ago=3600))
    stale = partner.report_inventory([older])
    check("an older report is acknowledged as stale", stale.accepted == 1 and stale.results[0].stale, stale)
    bad = partner.report_inventory([inventory_pb2.DeviceReport(device_id="mac-x")])
    check("a bad report is refused, naming the field", bad.rejected == 1 and "devices[0]." in bad.results[0].error, bad)

    after = gateway.check_access("bob", "mac-bob", min_revision=report.revision)
    check("bob is let in at the report's revision", after.decision == ALLOW and after.revision >= report.revision, after)

    try:
        event = events.get(timeout=10)
    except queue.Empty:
        event = None
    stream.cancel()
    check(
        "WatchCompliance delivers bob's ALLOW",
        isinstance(event, compliance_pb2.ComplianceEvent)
        and event.device_id == "mac-bob"
        and event.decision == ALLOW
        and event.revision >= report.revision,
        event,
    )


    for client in (gateway, partner, anonymous):
        client.close()
    print(f"python: {results['passed']} passed, {results['failed']} failed")
    return 0 if results["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
