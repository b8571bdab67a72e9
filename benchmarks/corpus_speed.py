"""How fast the built-in corpus is generated (the target is >= 5 MB/s in one process).

Run: python benchmarks/corpus_speed.py [num_stories]
Prints MB/s for generation alone, then the time to generate and measure the default-size corpus.
"""

import sys
import time

from nlpssl.corpus import DEFAULT_NUM_STORIES, corpus_stats, generate_stories


def main() -> None:
    num_stories = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_NUM_STORIES
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
