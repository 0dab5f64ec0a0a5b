"""Ingestion benchmark: SFTP download, decryption and memory, each against its target, in one run.

Not a test: the figures depend on the machine and on whatever else runs on it,
so every comparison is made against a reference measured in the same run (the
OpenSSH ``sftp`` client on the same sshd, ``openssl speed`` on the same CPU).
Each timed step runs ``--repeat`` times, alternating with its reference, and
the best run of each is kept: on a shared machine the best run is the one
least disturbed by other processes, and the CPU taken by others during the
decryption runs is printed so that a disturbed figure can be recognised.

    python bench/ingest.py [--size-mib 1024] [--work DIR] [--repeat 3]

Steps: generate random plaintext files (``--size-mib`` and 100 MiB), encrypt
them the way ``prepare_delivery`` does for a fresh hub key, start a private
OpenSSH sshd (``start_sftp_server``), upload them, then measure

1. download: ``SftpSession.open_stream`` read sequentially into a reused buffer,
   against ``sftp get`` to /dev/null; target >= 0.7x;
2. decryption: ``decrypt_stream`` from a file in the page cache to /dev/null
   (and to a real file), against ``openssl speed -evp aes-256-gcm`` at its
   largest block size; target >= 0.5x;
3. memory: peak RSS of a child process that runs ``receive_file`` over SFTP for
   the small and for the large file; target: growth < 64 MiB.

Everything lives in a fresh folder under ``--work`` (default ``bench/work``),
removed at the end with sshd stopped, even on failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hdh_deliver.envelope import DEFAULT_SEGMENT_SIZE, TAG_BYTES, decrypt_stream, encrypt_stream
from hdh_deliver.keys import (
    HubKeyRing,
    generate_hub_key,
    key_id,
    load_private_key,
    load_public_key,
)
from hdh_deliver.manifest import PARQUET, FileEntry
from hdh_deliver.streams import HashingWriter, read_into, sha256_file
from hdh_deliver.transfer import SftpSettings, sftp_session
from hdh_devtools.sftp_server import SftpServer, start_sftp_server
from hdh_pipelines.ingestion.receive import SftpDeliverySource, receive_file

MIB = 1 << 20
SMALL_MIB = 100
DOWNLOAD_TARGET = 0.7
DECRYPT_TARGET = 0.5
RSS_GROWTH_TARGET_MIB = 64
PROVIDER, DELIVERY_ID = "bench", "ingest-1"
# The read size decrypt_stream uses at the default segment size: the download
# loop reads the way the hub does.
READ_BYTES = DEFAULT_SEGMENT_SIZE + TAG_BYTES
DEFAULT_WORK = Path(__file__).resolve().parent / "work"


@dataclass(frozen=True)
class BenchFile:
    """One encrypted file of the run, as the manifest would describe it."""

    plain: Path
    encrypted: Path
    entry: FileEntry

    @property
    def remote(self) -> str:
        return f"{PROVIDER}/{DELIVERY_ID}/{self.entry.name}"


def say(text: str = "") -> None:
    print(text, flush=True)


def mib_s(size: int, seconds: float) -> float:
    return size / MIB / seconds


class CpuShare:
    """CPU used by other processes during a step: the machine's busy time less this process tree's.

    Only exact for steps whose child processes are waited for (openssl, the
    decryption itself): an sshd session is not our child and would count as other.
    """

    def __init__(self) -> None:
        self._busy, self._own, self._wall = _machine_busy(), _own_cpu(), time.perf_counter()

    def others(self) -> float:
        """Fraction of the whole machine (all cores) used by other processes since creation."""
        wall = time.perf_counter() - self._wall
        foreign = (_machine_busy() - self._busy) - (_own_cpu() - self._own)
        return max(0.0, foreign) / (wall * (os.cpu_count() or 1))


def _machine_busy() -> float:
    """Busy CPU seconds of all cores since boot (everything but idle and iowait), steal included."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        for offset in range(0, size, MIB):
            handle.write(os.urandom(min(MIB, size - offset)))


def warm(path: Path) -> None:
    """Read a file once so that it is in the page cache: disk speed is not what is measured."""
    buffer = bytearray(8 * MIB)
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass


def encrypt(plain: Path, folder: Path, hub_public_key) -> tuple[BenchFile, float]:
    """Encrypt as ``prepare_delivery`` does (digests included); the rate is for information."""
    name = plain.name + ".hdhenc"
    encrypted = folder / name
    started = time.perf_counter()
    with open(plain, "rb") as source, open(encrypted, "wb") as target:
        sink = HashingWriter(target)
        encrypt_stream(source, sink, hub_public_key)
    entry = FileEntry(
        name=name,
        dataset="BENCH",
        media_type=PARQUET,
        compression="none",
        rows=0,
        plaintext_sha256=sha256_file(plain),
        ciphertext_sha256=sink.hexdigest(),
        ciphertext_bytes=sink.bytes,
    )
    return BenchFile(plain, encrypted, entry), mib_s(plain.stat().st_size, time.perf_counter() - started)


def settings_for(server: SftpServer) -> SftpSettings:
    return SftpSettings(server.host, server.port, server.user, server.client_key, server.known_hosts)


def upload(server: SftpServer, files: list[BenchFile]) -> float:
    """Upload every file under the inbox as a provider would; returns the rate for information."""
    total, started = 0, time.perf_counter()
    with sftp_session(settings_for(server)) as session:
        session.makedirs(f"{server.inbox}/{PROVIDER}/{DELIVERY_ID}")
        for bench_file in files:
            with open(bench_file.encrypted, "rb") as handle:
                total += session.upload(handle, f"{server.inbox}/{bench_file.remote}")
    return mib_s(total, time.perf_counter() - started)


# --- 1. download -------------------------------------------------------------------------------


# The OpenSSH client is timed with its default cipher and with the one paramiko
# negotiates here; the faster of the two is the reference.
OPENSSH_CIPHERS = (None, "aes128-gcm@openssh.com")


def openssh_get(
    server: SftpServer, remote: str, size: int, work: Path, cipher: str | None
) -> tuple[float, str]:
    """Time the OpenSSH client fetching ``remote`` to /dev/null; also return the cipher it used.

    The whole command is timed, connection and authentication included.
    """
    batch = work / "sftp-batch"
    batch.write_text(f"get {remote} /dev/null\n", encoding="utf-8")
    command = server.sftp_command(batch)
    command[1:1] = ["-v", *(["-c", cipher] if cipher else [])]  # -v: ssh's debug lines name the cipher
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise RuntimeError(f"sftp failed ({finished.returncode}): {finished.stderr[-2000:]}")
    chosen = re.search(r"server->client cipher: (\S+)", finished.stderr)
    return mib_s(size, seconds), chosen.group(1) if chosen else "unknown"


def paramiko_get(server: SftpServer, remote: str, size: int) -> tuple[float, float, str]:
    """Time ``open_stream`` read to the end into a reused buffer, as ``decrypt_stream`` reads it."""
    buffer = bytearray(READ_BYTES)
    started = time.perf_counter()
    with sftp_session(settings_for(server)) as session:
        cipher = session.client.get_channel().get_transport().remote_cipher
        loop_started, received = time.perf_counter(), 0
        with session.open_stream(remote, size) as stream:
            while count := read_into(stream, buffer):
                received += count
        loop_seconds = time.perf_counter() - loop_started
    if received != size:
        raise RuntimeError(f"open_stream returned {received} bytes of {size}")
    return mib_s(size, loop_seconds), mib_s(size, time.perf_counter() - started), cipher


# --- 2. decryption -----------------------------------------------------------------------------


def openssl_speed() -> tuple[float, int]:
    """``openssl speed -evp aes-256-gcm``: bytes per second at the largest block size, and that size.

    openssl divides by the CPU time it used, not by wall time, so other
    processes barely lower its figure while they do lower ours.
    """
    output = subprocess.run(
        ["openssl", "speed", "-evp", "aes-256-gcm", "-seconds", "2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sizes = [int(v) for v in re.findall(r"(\d+) bytes", output.split("\ntype", 1)[1].splitlines()[0])]
    row = next(line for line in output.splitlines() if line.upper().startswith("AES-256-GCM"))
    rates = [float(v) * 1000 for v in re.findall(r"([\d.]+)k", row)]  # "k" is 1000 bytes per second
    return rates[-1], sizes[-1]


def decrypt_rate(bench_file: BenchFile, keyring: HubKeyRing, destination: Path) -> tuple[float, float]:
    """Decrypt from the page cache into ``destination``; bytes per second, and others' CPU share."""
    share = CpuShare()
    started = time.perf_counter()
    with (
        open(bench_file.encrypted, "rb", buffering=MIB) as source,
        open(destination, "wb", buffering=0 if destination == Path(os.devnull) else MIB) as sink,
    ):
        result = decrypt_stream(source, sink, keyring.get)
    seconds = time.perf_counter() - started
    if result.plaintext_sha256 != bench_file.entry.plaintext_sha256:
        raise RuntimeError("decryption produced the wrong plaintext")
    return result.plaintext_bytes / seconds, share.others()


def primitive_rates(seconds: float = 0.5) -> tuple[float, float]:
    """SHA-256 and AES-256-GCM decryption of 1 MiB buffers in this process, bytes per second.

    They bound what ``decrypt_stream`` can reach: each byte costs one decryption
    and two digests, spread over the machine's cores.
    """
    block = os.urandom(MIB)
    aead, nonce = AESGCM(AESGCM.generate_key(bit_length=256)), os.urandom(12)
    sealed, plain = aead.encrypt(nonce, block, b""), bytearray(MIB)
    digest = hashlib.sha256()

    def rate(step: Callable[[], object]) -> float:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            step()
            count += 1
        return count * MIB / (time.perf_counter() - started)

    return rate(lambda: digest.update(block)), rate(lambda: aead.decrypt_into(nonce, sealed, b"", plain))


# --- 3. memory ---------------------------------------------------------------------------------


def child_peak_rss(server: SftpServer, bench_file: BenchFile, key_file: Path, work: Path) -> dict:
    """Run ``receive_file`` over SFTP in a fresh interpreter; its peak RSS is its own, per file."""
    order = {
        "settings": {
            **asdict(settings_for(server)),
            "private_key_file": str(server.client_key),
            "known_hosts_file": str(server.known_hosts),
        },
        "folder": f"{server.inbox}/{PROVIDER}/{DELIVERY_ID}",
        "entry": asdict(bench_file.entry),
        "key_file": str(key_file),
        "destination": str(work / f"received-{bench_file.plain.name}"),
    }
    finished = subprocess.run(
        [sys.executable, __file__, "--rss-child", json.dumps(order)],
        capture_output=True,
        text=True,
        check=False,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"receive child failed: {finished.stderr[-2000:]}")
    Path(order["destination"]).unlink(missing_ok=True)
    return json.loads(finished.stdout)


def rss_child(order_json: str) -> None:
    """The child's side: receive one file, print its own peak RSS in MiB and the rate, as JSON."""
    order = json.loads(order_json)
    settings = order["settings"]
    settings["private_key_file"] = Path(settings["private_key_file"])
    settings["known_hosts_file"] = Path(settings["known_hosts_file"])
    entry = FileEntry(**order["entry"])
    key = load_private_key(Path(order["key_file"]))
    keyring = HubKeyRing({key_id(key.public_key()): key})
    started = time.perf_counter()
    with sftp_session(SftpSettings(**settings)) as session:
        result = receive_file(
            SftpDeliverySource(session, order["folder"]), entry, keyring, Path(order["destination"])
        )
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mib": peak_kib / 1024, "mib_s": mib_s(result.ciphertext_bytes, seconds)}))


# --- the run -----------------------------------------------------------------------------------


@contextmanager
def work_folder(parent: Path) -> Iterator[Path]:
    """A fresh folder under ``parent``, removed afterwards (with ``parent`` if this made it)."""
    made_parent = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="ingest-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if made_parent and not any(parent.iterdir()):
            parent.rmdir()


def verdict(value: float, target: float, *, above: bool = True) -> str:
    met = value >= target if above else value < target
    return "MET" if met else "MISSED"


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    python = sys.version.split()[0]
    return f"{os.cpu_count()} cores ({model}), {memory_kib / MIB:.0f} GiB RAM, Python {python}"


def run(size_mib: int, work_parent: Path, repeat: int) -> None:
    say(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start")
    with work_folder(work_parent) as work:
        hub_key = generate_hub_key(work)
        hub_private = load_private_key(hub_key.private_key_file)
        keyring = HubKeyRing({hub_key.key_id: hub_private})
        files = []
        for mib in (SMALL_MIB, size_mib):
            plain = work / f"plain-{mib}mib.bin"
            write_random(plain, mib * MIB)
            bench_file, rate = encrypt(plain, work, load_public_key(hub_key.public_key_file.read_bytes()))
            files.append(bench_file)
            say(f"encrypted {mib} MiB at {rate:.0f} MiB/s (digests included)")
        small, large = files
        server = start_sftp_server(work / "sftp")
        try:
            say(f"uploaded at {upload(server, files):.0f} MiB/s (paramiko, for information)")
            download = measure_download(server, large, work, repeat)
            decryption = measure_decryption(large, keyring, work, repeat)
            memory = measure_memory(server, small, large, hub_key.private_key_file, work)
        finally:
            server.stop()
    say()
    say("== summary ==")
    say(
        f"download: {download:.2f}x OpenSSH (target >= {DOWNLOAD_TARGET}x) "
        f"{verdict(download, DOWNLOAD_TARGET)}"
    )
    say(
        f"decryption: {decryption:.2f}x openssl speed (target >= {DECRYPT_TARGET}x) "
        f"{verdict(decryption, DECRYPT_TARGET)}"
    )
    say(
        f"RSS growth {SMALL_MIB} MiB -> {size_mib} MiB: {memory:.1f} MiB "
        f"(target < {RSS_GROWTH_TARGET_MIB} MiB) "
        f"{verdict(memory, RSS_GROWTH_TARGET_MIB, above=False)}"
    )


def measure_download(server: SftpServer, large: BenchFile, work: Path, repeat: int) -> float:
    size = large.entry.ciphertext_bytes
    remote = f"{server.inbox}/{large.remote}"
    say()
    say(f"== 1. download of {size / MIB:.0f} MiB over loopback ==")
    openssh_runs: list[float] = []
    loop_runs: list[float] = []
    session_runs: list[float] = []
    for attempt in range(1, repeat + 1):
        references = []
        for cipher in OPENSSH_CIPHERS:
            warm(server.inbox / large.remote)
            rate, chosen = openssh_get(server, remote, size, work, cipher)
            openssh_runs.append(rate)
            references.append(f"{rate:.0f} MiB/s ({chosen})")
        warm(server.inbox / large.remote)
        loop, session, cipher = paramiko_get(server, remote, size)
        loop_runs.append(loop)
        session_runs.append(session)
        say(
            f"  run {attempt}: OpenSSH sftp {', '.join(references)}; open_stream loop {loop:.0f} MiB/s, "
            f"{session:.0f} with connection ({cipher}); load {os.getloadavg()[0]:.2f}"
        )
    best_openssh, best_loop, best_session = max(openssh_runs), max(loop_runs), max(session_runs)
    say(
        f"  best: OpenSSH {best_openssh:.0f} MiB/s, open_stream {best_loop:.0f} MiB/s "
        f"({best_session:.0f} with connection): ratio {best_loop / best_openssh:.2f} "
        f"({best_session / best_openssh:.2f} with connection)"
    )
    return best_loop / best_openssh


def measure_decryption(large: BenchFile, keyring: HubKeyRing, work: Path, repeat: int) -> float:
    size = large.entry.ciphertext_bytes
    say()
    say(f"== 2. decryption of {size / MIB:.0f} MiB from the page cache ==")
    sha_rate, aes_rate = primitive_rates()
    cores = os.cpu_count() or 1
    # Two digest chains and one decryption per byte, spread over at most two threads.
    bound = min(cores, 2) / (2 / sha_rate + 1 / aes_rate)
    say(
        f"  primitives here: SHA-256 {sha_rate / 1e9:.2f} GB/s, "
        f"AES-256-GCM decrypt {aes_rate / 1e9:.2f} GB/s "
        f"-> at most {bound / 1e9:.2f} GB/s for decrypt_stream on {min(cores, 2)} cores"
    )
    speeds, to_null, to_file = [], [], []
    output = work / "decrypted.bin"
    for attempt in range(1, repeat + 1):
        share = CpuShare()
        speed, block = openssl_speed()
        speeds.append(speed)
        openssl_others = share.others()
        # The page cache here holds less than two such files: warm the source
        # again after the previous file-to-file run pushed it out.
        warm(large.encrypted)
        null_rate, null_others = decrypt_rate(large, keyring, Path(os.devnull))
        file_rate, _ = decrypt_rate(large, keyring, output)
        output.unlink()
        to_null.append(null_rate)
        to_file.append(file_rate)
        say(
            f"  run {attempt}: openssl speed {speed / 1e9:.2f} GB/s ({block}-byte blocks, others "
            f"{openssl_others:.0%}); decrypt_stream to /dev/null {null_rate / 1e9:.2f} GB/s (others "
            f"{null_others:.0%}), file to file {file_rate / 1e9:.2f} GB/s"
        )
    ratio = max(to_null) / max(speeds)
    say(
        f"  best: openssl {max(speeds) / 1e9:.2f} GB/s, decrypt_stream {max(to_null) / 1e9:.2f} GB/s "
        f"to /dev/null ({max(to_file) / 1e9:.2f} file to file): ratio {ratio:.2f}; "
        f"decrypt_stream reaches {max(to_null) / bound:.0%} of the bound above"
    )
    return ratio


def measure_memory(
    server: SftpServer, small: BenchFile, large: BenchFile, key_file: Path, work: Path
) -> float:
    say()
    say("== 3. peak RSS of receive_file over SFTP, one child process per file ==")
    peaks = {}
    for bench_file in (small, large):
        report = child_peak_rss(server, bench_file, key_file, work)
        peaks[bench_file] = report["peak_rss_mib"]
        size = bench_file.entry.ciphertext_bytes / MIB
        say(
            f"  {size:.0f} MiB: peak RSS {report['peak_rss_mib']:.1f} MiB, received and decrypted at "
            f"{report['mib_s']:.0f} MiB/s"
        )
    growth = peaks[large] - peaks[small]
    say(f"  growth: {growth:.1f} MiB")
    return growth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the large file (default 1024)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="parent of the scratch folder")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timed step; the best is kept")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child)
        return 0
    if args.size_mib <= SMALL_MIB:
        parser.error(f"--size-mib must exceed the small file's {SMALL_MIB} MiB")
    run(args.size_mib, args.work, max(1, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
