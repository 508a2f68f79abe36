from twisted.application.service import ServiceMaker

ross = ServiceMaker(
    "Ross container engine",
    "ross.tap",
    "The Ross container engine daemon (run with -n).",
    "ross",
)
