"""How far Tollgate's token estimate (UTF-8 bytes / 4) is from a real Claude tokenizer, on real text.

Current Claude tokenizers are not published; the last one Anthropic shipped is `tokenizer.json` in the
`anthropic` SDK up to 0.37. Get it and run:
  pip download anthropic==0.37.1 --no-deps -d /tmp/a && unzip -o /tmp/a/*.whl anthropic/tokenizer.json -d /tmp/a
  pip install tokenizers && python -m bench.estimator /tmp/a/anthropic/tokenizer.json
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORPORA = {
    "English prose (Markdown docs)": ["README.md", "docs/*.md"],
    "Python source": ["gateway/*.py", "store/*.py", "ingest/*.py"],
    "JSON (MCP and OTLP captures)": ["tests/data/**/*.json", "tests/e2e/captures/**/*.json"],
}


def estimate(text: str) -> int:
    return -(-len(text.encode()) // 4)


def main(tokenizer_path: str) -> None:
    from tokenizers import Tokenizer  # measurement-only dependency, not installed by Tollgate

    tokenizer = Tokenizer.from_file(tokenizer_path)
    for name, patterns in CORPORA.items():
        files = [p for pattern in patterns for p in sorted(ROOT.glob(pattern)) if p.is_file()]
        texts = [t for t in (p.read_text(encoding="utf-8") for p in files) if t.strip()]
        real = [len(tokenizer.encode(t).ids) for t in texts]
        est = [estimate(t) for t in texts]
        errors = sorted(e / r - 1 for e, r in zip(est, real, strict=True))
        size = sum(len(t.encode()) for t in texts)
        print(f"{name}: {len(texts)} files, {size:,} bytes, {size / sum(real):.2f} bytes/token; "
              f"estimate/actual {sum(est) / sum(real):.3f}; per file median {errors[len(errors) // 2]:+.1%}, "
              f"range {errors[0]:+.1%} .. {errors[-1]:+.1%}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_file():
        sys.exit(__doc__)
    main(sys.argv[1])
