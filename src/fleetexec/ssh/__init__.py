"""The SSH layer: one host, one command, one `HostResult`. All paramiko knowledge lives here.

`options` is paramiko-free (the parent process imports it); `session`,
`hostkeys` and `credentials` import paramiko and run inside worker processes.
"""
