"""snmpsim variation module: a lab PDU outlet's control (sPDUOutletCtl.N).

snmpsim loads every *.py of this directory with exec() and calls
`variate` for each GET, GETNEXT or SET of a record tagged `2:laboutlet`
(lab/pdu.py writes the data file). The outlets themselves live in
`hostpower.lab.pdu.OUTLETS`, set up by the PDU process (pduserver.py) that
runs snmpsim in-process: this module only translates.
"""

from pysnmp.smi import error

from hostpower.lab import pdu


def init(**context):
    pass


def variate(oid, tag, value, **context):
    if not context["nextFlag"] and not context["exactMatch"]:
        return context["origOid"], tag, context["errorStatus"]
    outlets = pdu.OUTLETS
    outlet = int(str(oid).rsplit(".", 1)[1])
    if context["setFlag"]:
        try:
            state = outlets.write(outlet, int(context["origValue"]))
        except (pdu.BadValue, ValueError, TypeError):
            idx = max(0, context["varsTotal"] - context["varsRemaining"] - 1)
            raise error.WrongValueError(name=oid, idx=idx) from None
    else:
        state = outlets.read(outlet)
    return oid, tag, str(state)


def shutdown(**context):
    pass
