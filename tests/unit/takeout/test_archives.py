"""Zip archives and files that are not what they claim: damaged members, encryption, wrong names, devices, size."""

from __future__ import annotations

import io
import os
import random
import stat
import threading
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from worker.takeout import ParseResult, TakeoutFormatError, parse_takeout_bytes, parse_takeout_file

MEMBER = "Takeout/YouTube and YouTube Music/history/watch-history.json"
SAMPLE = "vidvidex_watch-history.json"


def archive_of(data: bytes, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A one-member archive holding ``data`` where Takeout puts the watch history."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        archive.writestr(MEMBER, data)
    return buffer.getvalue()


@pytest.fixture
def sample_zip(samples: Path) -> bytes:
    return archive_of((samples / SAMPLE).read_bytes())


Parser = Callable[[bytes, str], ParseResult]


def _from_bytes(data: bytes, name: str) -> ParseResult:
    return parse_takeout_bytes(data, name=name)


@pytest.fixture(params=["bytes", "file"])
def parse_as(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Parser]:
    """Parse given bytes as parse_takeout_bytes does, or written to a file named ``name`` (the CLI's way)."""
    if request.param == "bytes":
        yield _from_bytes
        return

    def from_file(data: bytes, name: str) -> ParseResult:
        path = tmp_path / name
        path.write_bytes(data)
        try:
            return parse_takeout_file(path)
        except TakeoutFormatError as exc:  # report it under ``name`` (``name!member``), as the bytes route does
            raise TakeoutFormatError(name + exc.path.removeprefix(str(path)), exc.reason, exc.position) from None

    yield from_file


def flip_encrypted_flag(data: bytes) -> bytes:
    """Set the "encrypted" bit of a one-member archive's flags (local header and central directory)."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        out[out.index(signature) + offset] |= 0x1
    return bytes(out)


class TestDamagedMember:
    @pytest.mark.parametrize(
        ("damage", "detail"),
        [
            (lambda b: b[:200] + b[220:], "an offset in it points before the start of the file"),
            (lambda b: b[:120] + bytes([b[120] ^ 0xFF]) + b[121:], "Error -3 while decompressing data"),
        ],
        ids=["20-bytes-dropped", "deflate-byte-flipped"],
    )
    def test_is_one_error_naming_archive_and_member(
        self, sample_zip: bytes, parse_as: Parser, damage: Callable[[bytes], bytes], detail: str
    ) -> None:
        """Bytes dropped inside the member, or a flipped byte of its deflate data: TakeoutFormatError naming both."""
        with pytest.raises(TakeoutFormatError) as info:
            parse_as(damage(sample_zip), "takeout.zip")
        assert info.value.path == f"takeout.zip!{MEMBER}" and info.value.position is None
        assert info.value.reason.startswith("cannot read archive member: damaged (")
        assert detail in info.value.reason and info.value.reason.endswith("; download the export again")

    def test_cut_archive_says_the_download_may_be_incomplete(self, sample_zip: bytes, parse_as: Parser) -> None:
        """An archive without its end (an interrupted download) cannot list its members: said so, in one line."""
        with pytest.raises(TakeoutFormatError) as info:
            parse_as(sample_zip[: len(sample_zip) // 2], "takeout.zip")
        assert str(info.value) == (
            "takeout.zip: cannot read the zip archive's list of members: damaged (File is not a zip file);"
            " the download may be incomplete: download the export again"
        )

    @pytest.mark.parametrize(
        "compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA], ids=["stored", "deflated", "lzma"]
    )
    def test_seeded_mutations_raise_only_takeout_format_error(
        self, samples: Path, parse_as: Parser, compression: int
    ) -> None:
        """200 byte flips, overwrites, deletions, insertions and cuts of a small archive: each one either parses
        or raises TakeoutFormatError with a one-line message naming the archive, never anything else."""
        base = archive_of((samples / SAMPLE).read_bytes(), compression)
        rng = random.Random(20240105 + compression)
        outcomes = {"parsed": 0, "refused": 0}
        for _ in range(200):
            data = bytearray(base)
            for _ in range(rng.choice((1, 1, 2, 4))):
                at = rng.randrange(len(data))
                match rng.randrange(5):
                    case 0:
                        data[at] ^= 1 << rng.randrange(8)
                    case 1:
                        data[at] = rng.randrange(256)
                    case 2:
                        del data[at : at + rng.randrange(1, 40)]
                    case 3:
                        data[at:at] = rng.randbytes(rng.randrange(1, 20))
                    case _:
                        del data[max(at, 1) :]
            try:
                parse_as(bytes(data), "takeout.zip")
            except TakeoutFormatError as exc:
                message = str(exc)
                assert message.startswith("takeout.zip") and len(message.splitlines()) == 1, message
                outcomes["refused"] += 1
            else:
                outcomes["parsed"] += 1
        assert outcomes["refused"] > 150  # the mutations do hit the archive

    def test_member_name_with_a_line_break_is_shown_escaped(self, parse_as: Parser) -> None:
        """A damaged member whose name holds a line break is named on one line."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("watch-history\n.json", b"[" * 5000)
        data = buffer.getvalue()
        at = 30 + len("watch-history\n.json") + 2  # inside the compressed data, after the local header
        damaged = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
        with pytest.raises(TakeoutFormatError) as info:
            parse_as(damaged, "takeout.zip")
        assert info.value.path == "takeout.zip!watch-history\\n.json" and "\n" not in str(info.value)


class TestEncryptedMember:
    def test_says_it_is_encrypted_without_a_python_repr(self, sample_zip: bytes, parse_as: Parser) -> None:
        """A password-protected member is named with what to do, not with Python's ZipInfo."""
        with pytest.raises(TakeoutFormatError) as info:
            parse_as(flip_encrypted_flag(sample_zip), "takeout.zip")
        assert str(info.value) == (
            f"takeout.zip!{MEMBER}: archive member is encrypted (a password-protected zip); export again"
            " without encryption, or give the extracted file"
        )


class TestNotWhatTheNameSays:
    @pytest.mark.parametrize(
        "data", [b"hello \xff world", b"<!DOCTYPE html><html><body>Sign in</body></html>", b"[{"], ids=str
    )
    def test_zip_name_without_a_zip_signature(self, parse_as: Parser, data: bytes) -> None:
        """A .zip that is neither an archive nor an export is called not a zip archive, not "not UTF-8",
        "no records" or "invalid JSON"."""
        with pytest.raises(TakeoutFormatError) as info:
            parse_as(data, "takeout.ZIP")
        assert info.value.position == "byte 0"
        assert info.value.reason.startswith("not a zip archive: it does not start with a zip signature ('PK')")

    def test_export_under_a_zip_name_is_still_read(self, samples: Path, parse_as: Parser) -> None:
        """Content decides: a JSON export named .zip is read as it was before, not refused for its name."""
        result = parse_as((samples / SAMPLE).read_bytes(), "takeout.zip")
        assert result.source == "takeout_json" and len(result.views) == 16

    def test_empty_zip_file_is_called_empty(self, parse_as: Parser) -> None:
        """A 0-byte .zip is an empty file."""
        with pytest.raises(TakeoutFormatError, match="^takeout.zip: the file is empty$"):
            parse_as(b"", "takeout.zip")

    def test_zip_content_under_another_name_is_still_read(self, sample_zip: bytes, parse_as: Parser) -> None:
        """The format is told by content: an archive named .json is read as an archive."""
        assert parse_as(sample_zip, "watch-history.json").member == MEMBER

    @pytest.mark.skipif(not Path("/dev/null").is_char_device(), reason="needs /dev/null")
    def test_device_is_not_a_regular_file(self) -> None:
        """/dev/null is refused as a device (it used to be "no such file" for import), without reading it."""
        with pytest.raises(TakeoutFormatError) as info:
            parse_takeout_file("/dev/null")
        assert str(info.value) == (
            "/dev/null: is a character device, not a regular file; give the path of the export file"
        )

    @pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
    def test_pipe_is_still_read(self, sample_zip: bytes, tmp_path: Path) -> None:
        """A named pipe (as `<(unzip -p …)` gives) is read whole, a zip included: it is not refused as a device."""
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        assert stat.S_ISFIFO(fifo.stat().st_mode)

        def write() -> None:
            with fifo.open("wb") as pipe:
                pipe.write(sample_zip)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            result = parse_takeout_file(fifo)
        finally:
            writer.join(10)
        assert result.member == MEMBER and len(result.views) == 16


class TestLargeArchive:
    def test_archive_is_not_read_into_memory(self, samples: Path, tmp_path: Path) -> None:
        """A Takeout part with a 100 MB video and a small history: parsing it allocates far less than the archive.

        Reading the archive whole (as it once was) would allocate its 100 MB; opened from its path, only the
        member list, the history and bounded scans of other .json/.html members are read.
        """
        path = tmp_path / "takeout-001.zip"
        try:
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.write(samples / SAMPLE, MEMBER)
                video = zipfile.ZipInfo("Takeout/YouTube and YouTube Music/videos/upload.mp4")
                with archive.open(video, "w", force_zip64=True) as member:  # stored: as big on disk
                    block = bytes(1024 * 1024)
                    for _ in range(100):
                        member.write(block)
            assert path.stat().st_size > 100 * 1024 * 1024
            was_tracing = tracemalloc.is_tracing()
            if not was_tracing:
                tracemalloc.start()
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            try:
                result = parse_takeout_file(path)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                if not was_tracing:
                    tracemalloc.stop()
        finally:
            path.unlink(missing_ok=True)
        assert result.member == MEMBER and len(result.views) == 16
        assert peak - before < 8 * 1024 * 1024, f"{peak - before:,} bytes allocated while parsing"
