"""The worker's way from fork() to exec(): one module per step.

spawn.py forks and runs the steps in order in the child; each step is a small
function in its own module (privileges.py now; namespaces, mounts and cgroups
join the sequence as they land), in the spirit of nsjail's explicit sequence.
"""
