"""`python -m fleetexec.backends FD`: a worker process of `ProcessBackend`.

A separate entry point, so the message classes are those of
`fleetexec.backends.worker`, not copies in `__main__` that pickle would not match.
"""

from .worker import main

main()
