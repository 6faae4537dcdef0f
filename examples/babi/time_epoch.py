"""One MemN2N training epoch on bAbI task 1 (1k) with the memops ops (cpp) and with the same model on
the reference ops (plain PyTorch), 1 thread, side by side; then where the time of a cpp step goes.

    python examples/babi/time_epoch.py --data ../shared/data/babi/en
"""

import argparse
import time

import torch
import torch.nn.functional as F

from memops.app.babi import ScheduledSGD
from memops.app.data.babi import BabiVocab, encode, load_babi_task
from memops.nn import MemN2N


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, valid = load_babi_task(args.data, 1)
    vocab = BabiVocab.build(train + valid)
    gen = torch.Generator().manual_seed(0)
    steps = -(-len(train) // 32)
    batches = [encode([train[i] for i in torch.randint(0, len(train), (32,), generator=gen).tolist()], vocab)
               for _ in range(steps)]
    answer_words = [vocab.words.encode(a.split(",")) for a in vocab.answers]

    def epoch(backend, linear):
        torch.manual_seed(0)
        model = MemN2N(len(vocab.words), len(vocab.answers), embed_size=20, linear_start=linear,
                       answer_words=answer_words, backend=backend)
        opt = ScheduledSGD(model.parameters(), 0.01, 25 * steps, 40.0)
        start = time.perf_counter()
        for b in batches:
            loss = F.cross_entropy(model(b.story, b.question), b.labels, reduction="sum")
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    print(f"task 1 (1k): {len(train)} training questions, {steps} steps of 32 per epoch, 1 thread")
    for linear in (False, True):
        times = {b: [] for b in ("cpp", "reference")}
        for _ in range(args.repeats):  # alternate, so that machine noise hits both
            for b in times:
                times[b].append(epoch(b, linear))
        cpp, ref = min(times["cpp"]), min(times["reference"])
        print(f"  {'linear start' if linear else 'softmax     '}: cpp {1000 * cpp:.0f} ms, reference {1000 * ref:.0f} ms "
              f"per epoch (best of {args.repeats}); reference / cpp = {ref / cpp:.2f}")
    model = MemN2N(len(vocab.words), len(vocab.answers), embed_size=20, answer_words=answer_words, backend="cpp")
    opt = ScheduledSGD(model.parameters(), 0.01, 25 * steps, 40.0)
    with torch.profiler.profile() as prof:
        for b in batches:
            loss = F.cross_entropy(model(b.story, b.question), b.labels, reduction="sum")
            opt.zero_grad()
            loss.backward()
            opt.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
