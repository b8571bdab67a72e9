"""How fast the built-in corpus is generated (the target is >= 5 MB/s in one process).

Run: python benchmarks/corpus_speed.py [num_stories]
Prints MB/s for generation alone, then the time to generate and measure the default-size corpus.
"""

import argparse
import time

from nlpssl.corpus import DEFAULT_NUM_STORIES, corpus_stats, generate_stories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("num_stories", type=int, nargs="?", default=DEFAULT_NUM_STORIES,
                        help=f"stories to generate (default {DEFAULT_NUM_STORIES:,})")
    num_stories = parser.parse_args().num_stories
    if num_stories < 1:
        parser.error(f"num_stories must be at least 1 (got {num_stories})")
    start = time.perf_counter()
    num_bytes = sum(len(story.encode("utf-8")) for story in generate_stories(num_stories))
    seconds = time.perf_counter() - start
    print(
        f"generate_stories({num_stories}): {num_bytes / 1e6:.1f} MB in {seconds:.2f} s "
        f"= {num_bytes / 1e6 / seconds:.1f} MB/s"
    )
    start = time.perf_counter()
    stats = corpus_stats(generate_stories(num_stories))
    print(f"generate + corpus_stats: {time.perf_counter() - start:.2f} s; {stats}")


if __name__ == "__main__":
    main()
