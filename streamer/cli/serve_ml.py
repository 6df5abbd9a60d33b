"""`streamer serve-ml`: Florence-2 as a Label Studio ML backend."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from streamer.cli.common import model_flags, model_overrides
from streamer.config import load_config
from streamer.errors import StreamerError
from streamer.model.worker import load_detector


def add(sub) -> None:
    command = sub.add_parser("serve-ml", help="serve Florence-2 as a Label Studio ML backend: predictions for a "
                                              "project's image tasks")
    model_flags(command)
    command.add_argument("--listen", metavar="[HOST:]PORT", default="9090",
                         help="where Label Studio reaches it (PORT alone: 127.0.0.1; default 9090; beyond this "
                              "machine only with http.auth)")
    command.add_argument("--media-root", type=Path, metavar="FOLDER",
                         help="read Label Studio's local files (/data/local-files/?d=PATH) from this folder, as "
                              "LOCAL_FILES_DOCUMENT_ROOT, instead of over HTTP")


def run(args: argparse.Namespace) -> int:
    """`streamer serve-ml`: everything checked and the port bound before the model loads; runs until Ctrl-C or
    SIGTERM."""
    from streamer.annotation.label_studio import Backend, MlServer

    config = load_config(args.config, {**model_overrides(args), "http.listen": args.listen})
    if args.media_root is not None and not args.media_root.is_dir():
        raise StreamerError(f"--media-root {args.media_root}: not a folder")
    server = MlServer(config.http.listen, config.http.auth)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        detector = load_detector(config.model)
        name = Path(config.model.path).name if config.model.path else config.model.id  # no server path sent out
        server.start(Backend(detector, name, args.media_root, config.model.batch_size))
        print(f"streamer: Label Studio ML backend at {server.address} ({name}); add it in a project's Settings > "
              "Model", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
