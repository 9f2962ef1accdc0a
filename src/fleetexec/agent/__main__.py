"""`python -m fleetexec.agent --socket PATH --idle SECONDS [--detach]`: the agent process."""

from .server import main

main()
