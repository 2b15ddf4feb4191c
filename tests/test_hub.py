import logging
import socket

from pnpseg.io import hub


def test_reachable_follows_the_endpoint_and_offline_switches(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *hub._PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert hub.reachable(f"http://127.0.0.1:{port}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert not hub.reachable(f"http://127.0.0.1:{port}")  # the user said offline
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert not hub.reachable("http://127.0.0.1:9", timeout=1)  # nothing listens on port 9
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub.reachable("http://127.0.0.1:9")  # behind a proxy the client decides


def test_quiet_silences_and_restores_hub_logging():
    logger = logging.getLogger("huggingface_hub")
    logger.setLevel(logging.INFO)
    with hub.quiet():
        assert not logger.isEnabledFor(logging.WARNING)
    assert logger.level == logging.INFO


def test_quiet_leaves_other_loggers_alone(caplog):
    """Only huggingface_hub's and open_clip's chatter is silenced, not the application's."""
    import logging

    with caplog.at_level(logging.WARNING), hub.quiet():
        logging.getLogger("myapp").warning("mine")
        logging.warning("root, from the application")
        logging.getLogger("huggingface_hub.utils").warning("retrying")
    assert [r.getMessage() for r in caplog.records] == ["mine", "root, from the application"]
