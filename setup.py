"""Builds the project's PHP SAPI (sapi/) into the package when pip installs it.

Everything else is declared in pyproject.toml. The SAPI is C, built for Debian's
php-cgi8.2 binary and against its libphp8.2-embed; a machine without them (or without
php8.2-dev or gcc) gets an error that names the missing package (sapi/Makefile's
check-deps).
"""

import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithSapi(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install uses the tree: `make sapi` builds it there
        here = os.path.dirname(os.path.abspath(__file__))
        out = os.path.abspath(os.path.join(self.build_lib, "tenantfpm", "libexec"))
        subprocess.run(["make", "--no-print-directory", "-C", os.path.join(here, "sapi"),
                        f"OUT={out}"], check=True)


setup(cmdclass={"build_py": BuildPyWithSapi})
