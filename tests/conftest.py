import textwrap
from pathlib import Path

import pytest

from tenantfpm.config.model import PHP_ENGINE_BINARY, PHP_SAPI_BINARY


class FakeSystem:
    """The machine as config rules see it, without touching it."""

    users = {"alice": (1001, 1001), "bob": (1002, 1002), "root": (0, 0), "www-data": (33, 33),
             "toor": (0, 1000)}
    groups = {"alice": 1001, "bob": 1002, "root": 0, "www-data": 33}

    def user(self, name):
        return self.users.get(name)

    def user_named_as(self, uid):
        return self.users.get(str(uid))

    def group(self, name):
        return self.groups.get(name)

    def is_dir(self, path):
        return path == "/" or path.startswith("/srv")

    def is_executable(self, path):
        return path in ("/usr/bin/php-cgi", "/usr/bin/true", "/usr/bin/python3", PHP_SAPI_BINARY,
                        PHP_ENGINE_BINARY)

    def exists(self, path):
        return path.startswith(("/srv/", "/run/mysqld"))

    # what safety.py asks: nothing is tenant-writable, linked or in the way unless a test says
    writable: dict[str, str] = {}
    links: dict[str, str] = {}
    files: dict[str, str] = {}

    def writable_by(self, path, uid, gid):
        return next((w for p, w in self.writable.items() if path.startswith(p)), None)

    def symlink_in(self, path):
        return next((link for link in self.links if path.startswith(link)), None)

    def file_type(self, path):
        return self.files.get(path)

    def mem_total(self):
        return 8 << 30

    def cpus(self):
        return 4


@pytest.fixture
def fake_system():
    return FakeSystem()


@pytest.fixture
def write_site(tmp_path: Path):
    def write(body: str, name: str = "site.toml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(body).lstrip())
        return p
    return write
