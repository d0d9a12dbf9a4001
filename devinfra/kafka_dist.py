"""The Apache Kafka broker distribution: jars resolved from Maven Central, cached once.

No release tarball is needed: infra/kafka/pom.xml names the official `kafka_2.13` artifact plus a
log4j2 binding, and Maven copies the runtime classpath into the cache. A file lock makes
concurrent first runs (parallel test sessions, `make up` + tests) resolve only once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from devinfra.files import file_lock
from devinfra.process import DevInfraError, run_checked

log = logging.getLogger("devinfra")

DEFAULT_KAFKA_VERSION = "4.4.0"  # keep in step with <kafka.version> in infra/kafka/pom.xml
INFRA_DIR = Path(__file__).resolve().parent.parent / "infra" / "kafka"
POM = INFRA_DIR / "pom.xml"
LOG4J2_CONFIG = INFRA_DIR / "log4j2.properties"
_MARKER = "libs.complete"


def kafka_version() -> str:
    """The Kafka version to run: $KFM_KAFKA_VERSION or the pinned default."""
    return os.environ.get("KFM_KAFKA_VERSION") or DEFAULT_KAFKA_VERSION


def cache_root() -> Path:
    """$KFM_CACHE_DIR or ~/.cache/kfm: survives between sessions, shared by all checkouts."""
    configured = os.environ.get("KFM_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "kfm"


def kafka_home(version: str | None = None) -> Path:
    return cache_root() / f"kafka-{version or kafka_version()}"


def java_executable() -> str:
    """The `java` to run the broker with: $JAVA_HOME/bin/java, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise DevInfraError(
            "java not found: Kafka 4.x needs Java 17+ "
            "(run scripts/bootstrap.sh, or apt-get install openjdk-17-jre-headless)"
        )
    return found


def ensure_kafka(version: str | None = None) -> Path:
    """Resolve the broker's jars into the cache (first call only) and return the libs dir."""
    version = version or kafka_version()
    home = kafka_home(version)
    libs = home / "libs"
    if _complete(home, libs):
        return libs
    with file_lock(home / ".lock"):
        if _complete(home, libs):  # another process resolved it while we waited
            return libs
        _resolve(version, home, libs)
    return libs


def _complete(home: Path, libs: Path) -> bool:
    return (home / _MARKER).is_file() and any(libs.glob("kafka_2.13-*.jar"))


def _resolve(version: str, home: Path, libs: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevInfraError(
            "mvn not found: Maven resolves the Kafka jars "
            "(run scripts/bootstrap.sh, or apt-get install maven)"
        )
    if not POM.is_file():
        raise DevInfraError(f"{POM} is missing: devinfra must run from the project checkout")
    log.info(
        "Resolving Apache Kafka %s from Maven Central into %s (first run only; ~1 min)",
        version,
        libs,
    )
    started = time.monotonic()
    staging = home / f"libs.tmp-{uuid.uuid4().hex}"
    try:
        run_checked(
            [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(POM),
                f"-Dkafka.version={version}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            what=f"resolving Apache Kafka {version} with Maven",
            timeout=900.0,
        )
        jars = sorted(p.name for p in staging.glob("*.jar"))
        if not any(name.startswith(f"kafka_2.13-{version}") for name in jars):
            raise DevInfraError(f"Maven finished but no kafka_2.13-{version} jar in {staging}")
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (home / _MARKER).write_text("\n".join(jars) + "\n")
    log.info("Kafka %s ready: %d jars in %.1fs", version, len(jars), time.monotonic() - started)


def classpath(libs: Path) -> str:
    """The classpath the broker and its tools run with (a JVM wildcard, like bin/kafka-*.sh)."""
    return f"{libs}/*"


def cds_archive(libs: Path) -> Path | None:
    """Where this JVM + jar set keeps its class-data-sharing archive, or None if disabled.

    A dynamic CDS archive roughly halves broker startup (about 2.5s -> 1.3s on 2 cores). It is
    only valid for the exact JVM and jars, so both are part of its name; a stale or broken
    archive is ignored by the JVM (-Xshare:auto). Set KFM_KAFKA_CDS=0 to turn it off.
    """
    if os.environ.get("KFM_KAFKA_CDS", "1") == "0":
        return None
    java = Path(java_executable()).resolve()
    marker = libs.parent / _MARKER
    stamp = f"{java}:{java.stat().st_mtime_ns}:{marker.stat().st_mtime_ns}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    return libs.parent / "cds" / f"broker-{key}.jsa"
