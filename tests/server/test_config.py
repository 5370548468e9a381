"""`ServerConfig`: loopback by default; another address only with a key or --insecure; the limits."""

from __future__ import annotations

import pytest

from fourview.errors import InputError
from fourview.pipeline import ModelSettings
from fourview.server.config import ServerConfig, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host):
    assert is_loopback(host)
    assert ServerConfig(host=host).host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.com", "localhost.example.com", ""])
def test_other_hosts_need_a_key_or_insecure(host):
    assert not is_loopback(host)
    with pytest.raises(InputError, match=rf"^refusing to listen on {host}, which is not a loopback address, without "
                       r"--api-key KEY \(or --insecure"):  # fmt: skip
        ServerConfig(host=host)
    assert ServerConfig(host=host, api_key="a-long-key").api_key == "a-long-key"
    assert ServerConfig(host=host, insecure=True).insecure


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"api_key": "short"}, r"--api-key must be at least 8 printable characters"),
        ({"api_key": "tab\tin-the-key"}, r"--api-key must be at least 8 printable"),
        ({"port": 70000}, r"--port must be in \[0, 65535\], got 70000"),
        ({"max_upload_mb": 0}, r"--max-upload-mb must be in \[1, 1024\]"),
        ({"max_queued": 0}, r"--max-queued must be in \[1, 100000\]"),
        ({"turntable_frames": 500}, r"--turntable-frames must be in \[0, 120\]"),
        ({"preview_resolution": 8}, r"--preview-resolution in \[16, 1024\]"),
    ],
)
def test_limits_are_checked(changes, match):
    with pytest.raises(InputError, match=match):
        ServerConfig(**changes)


def test_devices_default_to_the_models_device():
    assert ServerConfig().devices == ("cpu",)
    assert ServerConfig(models=ModelSettings(device="cuda:1")).devices == ("cuda:1",)
    config = ServerConfig(workers=["cuda:0", "cuda:1"], data="jobs")
    assert config.devices == ("cuda:0", "cuda:1") and config.data.name == "jobs" and config.max_upload_bytes == 20e6
