"""fleetexec: run a command across a fleet of servers over SSH, in parallel."""
