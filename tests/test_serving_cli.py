"""`skinr1 serve` as an operator runs it: its own loopback Ray node, HTTPS, a bearer token in the
environment, and a SIGTERM to its process group at the end.

One command is started for the module (a Ray node plus a vLLM engine take tens of seconds on a loaded
2-core machine); the test then looks at every process under it.
"""

from __future__ import annotations

import base64
import datetime
import io
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOKEN = "cli-serving-token-5f1e"
REPO = Path(__file__).resolve().parents[1]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    import httpx

    from learner.group import free_port
    from skinr1.serving.demo import write_demo_checkpoint

    scratch = tmp_path_factory.mktemp("serve-cli")
    checkpoint = write_demo_checkpoint(scratch / "run", rl_steps=2, rank=8, base=tiny_model_dir)
    cert, key = self_signed_certificate(scratch)
    port = free_port()
    env = {**os.environ, "SKINR1_SERVE_TOKEN": TOKEN,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = open(scratch / "serve.log", "w")
    command = [sys.executable, "-m", "skinr1", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
               "--num-cpus", "4", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
               "max_tokens=8", "engine.max_model_len=1024", "engine.max_lora_rank=8"]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    tls = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{port}"
    started = time.perf_counter()
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"skinr1 serve exited with {process.returncode}:\n{(scratch / 'serve.log').read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/healthz", verify=tls, trust_env=False, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > 600:
                pytest.fail("skinr1 serve did not come up within 600s")
            time.sleep(2)
        print(f"skinr1 serve up in {time.perf_counter() - started:.1f}s")
        yield {"process": process, "url": url, "tls": tls, "log": scratch / "serve.log"}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_serve_command_https_token_digest_loopback_and_clean_sigterm(served):
    import httpx
    import psutil

    url, tls = served["url"], served["tls"]
    with httpx.Client(base_url=url, verify=tls, trust_env=False, timeout=300,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = client.post("/v1/diagnose", json={"image": base64.b64encode(_png()).decode(), "max_tokens": 4})
        assert response.status_code == 200, response.text
        assert response.json()["policy_version"] == 2
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    with pytest.raises(httpx.HTTPError):  # HTTPS only: plain HTTP on the port gets no answer
        httpx.get(url.replace("https://", "http://") + "/healthz", trust_env=False, timeout=10)

    driver = psutil.Process(served["process"].pid)
    processes = [driver] + driver.children(recursive=True)
    names = [" ".join(p.cmdline()) + " " + p.name() for p in processes]
    assert any("EngineCore" in name for name in names), names
    assert any("SkinR1Policy" in name for name in names), names

    # Only the digest leaves the driver (whose /proc environ still shows what it was started with):
    # no Ray process, replica or engine under it holds the token.
    holders = [name[:120] for p, name in zip(processes[1:], names[1:])
               if any(TOKEN in value or key == "SKINR1_SERVE_TOKEN" for key, value in p.environ().items())]
    assert not holders, holders

    # Nothing under the command listens beyond loopback (HTTP proxy, replica gRPC, Ray, vLLM).
    exposed = {(p.pid, c.laddr.ip, c.laddr.port) for p in processes for c in p.net_connections(kind="inet")
               if c.status == psutil.CONN_LISTEN and not _is_loopback(c.laddr.ip)}
    assert not exposed, exposed

    # SIGTERM to the process group (docker stop, systemd): everything stops, engine processes included.
    started = time.perf_counter()
    os.killpg(driver.pid, signal.SIGTERM)
    served["process"].wait(timeout=120)
    print(f"skinr1 serve stopped in {time.perf_counter() - started:.1f}s")
    _, alive = psutil.wait_procs(processes[1:], timeout=30)
    survivors = [name[:120] for p, name in zip(processes[1:], names[1:])
                 if p in alive and p.status() != psutil.STATUS_ZOMBIE]
    assert not survivors, survivors
