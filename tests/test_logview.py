"""`tenantfpm logs` through the self-service socket (logview.RemoteLog): paging in bounded
slices, a partial last line kept for later, a rotation followed from the new file's start."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from tenantfpm import logview
from tenantfpm.client import printable


class FakeMaster:
    """What SelfService.logs answers, over a file that grows and rotates, through the
    CLI's printable client (which escapes every string unless asked for it raw)."""

    def __init__(self, text: str, chunk: int) -> None:
        self.text, self.inode, self.chunk = text.encode(), 1, chunk

    def call(self, method: str, url: str, raw: bool = False) -> dict:
        q = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
        offset, limit = int(q["offset"]), min(int(q.get("limit", self.chunk)), self.chunk)
        data = self.text[offset:offset + limit]
        answer = {"exists": True, "not_kept": None, "inode": self.inode,
                  "size": len(self.text), "offset": offset, "next": offset + len(data),
                  "data": data.decode()}
        return answer if raw else printable(answer)


def test_lines_come_whole_across_slices_and_a_rotation(monkeypatch):
    master = FakeMaster("one\ntwo\nthree\npart", chunk=5)
    log = logview.RemoteLog(master, None, "error")  # type: ignore[arg-type]
    assert list(log.lines()) == ["one", "two", "three"]  # "part" waits for its newline
    master.text += b"ial\nfour\n"
    monkeypatch.setattr(logview.time, "sleep", lambda _: None)
    follow = log.follow()
    assert [next(follow), next(follow)] == ["partial", "four"]
    master.text, master.inode = b"after rotation\n", 2
    assert next(follow) == "after rotation"
