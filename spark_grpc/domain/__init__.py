"""The rules of the service, with no I/O: task states, retry maths."""
