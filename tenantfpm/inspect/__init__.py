"""Reading a busy php-cgi worker's request and PHP call stack from its memory.

No ptrace stop: process_vm_readv copies bytes out of the running worker, like
PHP-FPM's slowlog does with ptrace peeks and like phpspy. Every read is
bounded and every pointer checked; any doubt gives `Unavailable` with the
reason, never a guessed frame.
"""

from tenantfpm.inspect.php import Frame, PhpState, Unavailable, read_state

__all__ = ["Frame", "PhpState", "Unavailable", "read_state"]
