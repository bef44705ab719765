"""Ed25519 keys, signed ledgers, and the in-toto round trip with the real ``in-toto`` library."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import catalytic
from catalytic.cli import main
from catalytic.integrations.signing import load_public_key
from catalytic.ledger import digest
from catalytic.ledger.canonical import dumps, loads
from catalytic.ledger.integrity import check_seal

pytest.importorskip("cryptography", reason="cryptography is in the dev extra")


@pytest.fixture(autouse=True)
def _keep_cwd() -> Iterator[None]:
    cwd = os.getcwd()
    try:
        yield
    finally:
        os.chdir(cwd)


def keypair(tmp_path: Path, name: str) -> Path:
    prefix = tmp_path / name
    assert main(["keygen", "--output", str(prefix)]) == 0
    return prefix


def signed_run(tmp_path: Path, key: Path | None, command: list[str] | None = None) -> Path:
    os.chdir(tmp_path)  # the command runs in the current directory (tests restore it, see below)
    (tmp_path / "scratch").mkdir(exist_ok=True)
    (tmp_path / "scratch" / "input.txt").write_text("material\n")
    (tmp_path / "out").mkdir(exist_ok=True)
    result = catalytic.run(
        command or ["sh", "-c", "echo product > out/result.txt"],
        root=tmp_path,
        run_id="signed",
        catalytic_domains=["scratch"],
        durable_outputs=["out/result.txt"],
        allowed_roots=["out"],
        sign_key=key,
    )
    assert result.restored
    return result.ledger_dir


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    prefix = keypair(tmp_path, "key")
    assert stat.S_IMODE(prefix.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in prefix.read_bytes()
    assert b"PUBLIC KEY" in Path(f"{prefix}.pub").read_bytes()
    assert main(["keygen", "--output", str(prefix)]) == 2  # never overwrites silently


def test_signature_verifies_with_the_right_key_only(tmp_path: Path) -> None:
    good, other = keypair(tmp_path, "good"), keypair(tmp_path, "other")
    ledger = signed_run(tmp_path, good)
    sig = loads((ledger / digest.SIGNATURE_FILE).read_bytes())
    assert sig["signed"] == loads((ledger / digest.DIGEST_FILE).read_bytes())["root"]
    assert check_seal(ledger, trusted_keys=[load_public_key(f"{good}.pub")]) == []
    wrong = check_seal(ledger, trusted_keys=[load_public_key(f"{other}.pub")])
    assert [p.code for p in wrong] == ["SIGNATURE_INVALID"]


def test_a_forged_signature_or_resealed_ledger_fails(tmp_path: Path) -> None:
    good = keypair(tmp_path, "good")
    trusted = [load_public_key(f"{good}.pub")]
    ledger = signed_run(tmp_path, good)
    # Re-seal an edited ledger: the digest is consistent again, but the signature no longer covers it.
    (ledger / "STATUS.json").write_text(dumps({"status": "restored", "restoration_verified": True}))
    (ledger / digest.DIGEST_FILE).write_text(dumps(digest.compute(ledger, "signed")))
    assert [p.code for p in check_seal(ledger, trusted_keys=trusted)] == ["SIGNATURE_INVALID"]
    # Flip one bit of the signature itself, with the signed root adjusted to match.
    sig = loads((ledger / digest.SIGNATURE_FILE).read_bytes())
    sig["signed"] = loads((ledger / digest.DIGEST_FILE).read_bytes())["root"]
    sig["signature"] = ("1" if sig["signature"][0] == "0" else "0") + sig["signature"][1:]
    (ledger / digest.SIGNATURE_FILE).write_text(dumps(sig))
    assert [p.code for p in check_seal(ledger, trusted_keys=trusted)] == ["SIGNATURE_INVALID"]


def test_unsigned_ledger_fails_when_a_key_is_trusted(tmp_path: Path) -> None:
    good = keypair(tmp_path, "good")
    ledger = signed_run(tmp_path, None)
    assert check_seal(ledger) == []
    codes = [p.code for p in check_seal(ledger, trusted_keys=[load_public_key(f"{good}.pub")])]
    assert codes == ["SIGNATURE_MISSING"]


def test_run_with_a_bad_key_runs_nothing(tmp_path: Path) -> None:
    (tmp_path / "scratch").mkdir()
    (tmp_path / "notakey").write_text("hello\n")
    code = main(
        [
            "run",
            "--root",
            str(tmp_path),
            "--catalytic-domains",
            "scratch",
            "--sign-key",
            str(tmp_path / "notakey"),
            "-q",
            "--",
            "touch",
            str(tmp_path / "ran"),
        ]
    )
    assert code == 2
    assert not (tmp_path / "ran").exists()


def _sslib_key(pub: Path) -> dict[str, object]:
    return load_public_key(pub).sslib_dict()


def test_in_toto_link_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("in_toto", reason="in-toto is in the dev extra")
    from in_toto.exceptions import SignatureVerificationError
    from in_toto.models.metadata import Metadata
    from securesystemslib.signer import SSlibKey

    good, other = keypair(tmp_path, "good"), keypair(tmp_path, "other")
    ledger = signed_run(tmp_path, good)
    link_path = tmp_path / "run.link"
    assert (
        main(
            [
                "export",
                str(ledger),
                "--format",
                "in-toto",
                "--output",
                str(link_path),
                "--sign-key",
                str(good),
            ]
        )
        == 0
    )
    metadata = Metadata.load(str(link_path))
    link = metadata.signed
    assert link.name == "catalytic-run"
    assert link.command == ["sh", "-c", "echo product > out/result.txt"]
    assert link.materials == {"scratch/input.txt": {"sha256": _sha256(b"material\n")}}
    assert link.products["out/result.txt"] == {"sha256": _sha256(b"product\n")}
    assert link.products["scratch/input.txt"] == link.materials["scratch/input.txt"]
    assert link.byproducts["return-value"] == 0
    assert (
        link.byproducts["catalytic"]["ledger_digest"]
        == loads((ledger / digest.DIGEST_FILE).read_bytes())["root"]
    )

    # securesystemslib computes the same key id from the PEM public key as catalytic does.
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    sslib = SSlibKey.from_crypto(load_pem_public_key(Path(f"{good}.pub").read_bytes()))
    assert sslib.keyid == load_public_key(f"{good}.pub").keyid

    metadata.verify_signature(_sslib_key(Path(f"{good}.pub")))
    with pytest.raises(SignatureVerificationError):
        metadata.verify_signature(_sslib_key(Path(f"{other}.pub")))

    # Tampering with the link's products breaks the signature.
    text = link_path.read_text().replace(_sha256(b"product\n"), _sha256(b"forged\n"))
    link_path.write_text(text)
    with pytest.raises(SignatureVerificationError):
        Metadata.load(str(link_path)).verify_signature(_sslib_key(Path(f"{good}.pub")))


def test_in_toto_verify_accepts_the_link_under_a_layout(tmp_path: Path) -> None:
    pytest.importorskip("in_toto", reason="in-toto is in the dev extra")
    import in_toto.exceptions
    from in_toto.models.layout import Layout, Step
    from in_toto.models.metadata import Metablock
    from in_toto.verifylib import in_toto_verify

    good = keypair(tmp_path, "good")
    ledger = signed_run(tmp_path, good)
    key = _sslib_key(Path(f"{good}.pub"))
    links = tmp_path / "links"
    links.mkdir()
    keyid = str(key["keyid"])
    link_file = links / f"catalytic-run.{keyid[:8]}.link"
    assert main(["export", str(ledger), "-o", str(link_file), "--sign-key", str(good)]) == 0

    layout = Layout()
    layout.keys = {keyid: key}
    step = Step(name="catalytic-run")
    step.pubkeys = [keyid]
    step.expected_command = ["sh", "-c", "echo product > out/result.txt"]
    step.expected_materials = [["ALLOW", "scratch/*"], ["DISALLOW", "*"]]
    step.expected_products = [
        ["MATCH", "scratch/*", "WITH", "MATERIALS", "FROM", "catalytic-run"],
        ["CREATE", "out/result.txt"],
        ["DISALLOW", "*"],
    ]
    layout.steps = [step]
    layout.set_relative_expiration(days=1)
    metablock = Metablock(signed=layout)
    from securesystemslib.signer import CryptoSigner

    from catalytic.integrations.signing import load_signing_key

    metablock.create_signature(CryptoSigner(load_signing_key(good).key))
    summary = in_toto_verify(metablock, {keyid: key}, link_dir_path=str(links))
    assert "out/result.txt" in summary.products

    # The same layout, but the step must be performed by another key: verification fails.
    other = _sslib_key(Path(f"{keypair(tmp_path, 'other')}.pub"))
    layout.keys = {keyid: key, str(other["keyid"]): other}
    step.pubkeys = [str(other["keyid"])]
    metablock = Metablock(signed=layout)
    metablock.create_signature(CryptoSigner(load_signing_key(good).key))
    with pytest.raises(in_toto.exceptions.LinkNotFoundError):
        in_toto_verify(metablock, {keyid: key}, link_dir_path=str(links))


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_export_of_an_unfinished_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("in_toto", reason="in-toto is in the dev extra")
    ledger = signed_run(tmp_path, None)
    (ledger / "STATUS.json").unlink()
    assert main(["export", str(ledger), "-o", str(tmp_path / "x.link")]) == 2
    assert "INCOMPLETE" in capsys.readouterr().err
    assert not (tmp_path / "x.link").exists()
