"""Fence drivers: one small interface, several implementations.

The drivers stand below both the engine (its `engine` proxy source runs them
in-process) and the host agent (which runs them for the engine as a proxy).
They know the domain model (`hostpower.model`) and nothing above it.

Modules, and what a caller takes from each:
* `base`            - FenceDriver, the interface: native, agent_types(),
                      validate(spec), run(spec, action, timeout), close().
* `errors`          - DriverError, UnsupportedSpec, UnsupportedType, NoDriver.
* `registry`        - default_drivers, driver_for / select_driver (which
                      driver runs a spec), local_agent_types.
* `installed`       - what the fence-agents directory holds: installed_agent_types,
                      is_installed, agent_program.
* `script`          - ScriptDriver, which runs the fence-agents programs;
  `script_protocol` (their stdin, exit codes and output) and
  `script_metadata` (their `-o metadata` parameter lists).
* `ipmilan`         - NativeIpmiDriver, IPMI in-process with pyghmi;
  `ipmilan_options` (which fence_ipmilan options it honours, NATIVE_TYPES)
  and `ipmi_chassis` (the chassis power commands it sends).
* `redfish`         - NativeRedfishDriver, Redfish in-process with httpx;
  `redfish_options` (which fence_redfish options it honours, NATIVE_TYPES),
  `redfish_session` (one Redfish session: login, requests, logout) and
  `redfish_power` (the power operations, as fence_redfish performs them).

Nothing is imported here, so that importing one module (say `installed`)
does not load pyghmi.
"""
