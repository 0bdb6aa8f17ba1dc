"""The fence agent types hostpower accepts.

The standard types are the power-switching agents of ClusterLabs'
fence-agents package (4.12). Agents that do not switch power (storage
fencing, kdump detection, manual acknowledgement) are left out: a PM device
must be able to turn a host off and on.
"""

from __future__ import annotations

import re

TYPE_RE = re.compile(r"^[a-z0-9_]+$")

STANDARD_TYPES: frozenset[str] = frozenset("""
    aliyun alom amt apc apc_snmp aws azure_arm bladecenter brocade cdu cisco_mds
    cisco_ucs crosslink cyberpower_ssh docker drac drac5 dummy eaton_snmp ecloud
    emerson eps gce hds_cb hpblade ibm_powervs ibm_vpc ibmblade ibmz idrac ifmib
    ilo ilo2 ilo3 ilo3_ssh ilo4 ilo4_ssh ilo5 ilo5_ssh ilo_moonshot ilo_mp
    ilo_ssh imm intelmodular ipdu ipmilan ipmilanplus ironic kubevirt ldom
    lindypdu lpar netio openstack ovh powerman pve raritan raritan_px3
    rcd_serial redfish rhevm rsa rsb sanbox2 skalar tripplite_snmp vbox virsh
    vmware vmware_rest vmware_soap vmware_vcloud wti xenapi zvmip
""".split())

NOT_POWER_SWITCHING: frozenset[str] = frozenset(
    {"ack_manual", "compute", "evacuate", "heuristics_ping", "kdump", "mpath", "sbd", "scsi"}
)
