"""Trains the demo model on the tokenized corpus and writes the Hugging Face folder.

  python3 train.py --data TOKENS_DIR --hf HF_DIR [--seconds 360] [--tiny]

TOKENS_DIR holds train.bin / heldout.bin (from prepare.py); HF_DIR holds the
tokenizer files (from prepare.py) and receives config.json,
generation_config.json and model.safetensors (float16). Training runs for a
wall-clock budget: the step count is fixed after timing the first steps, and
the learning rate follows warm-up then cosine decay over that count.
Held-out perplexity is computed over every token of heldout.bin.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import safetensors_io
from model import Config, LlamaForCausalLM
from questions import QUESTIONS



def load_tokens(path):
    return torch.from_numpy(np.fromfile(path, dtype="<u2").astype(np.int64))


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def make_optimizer(model, lr, device):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"fused": True} if device == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, **kwargs)


@torch.no_grad()
def evaluate(model, tokens, seq, device, max_tokens=None):
    """Mean next-token loss over non-overlapping windows of `tokens`."""
    model.eval()
    n = tokens.numel() - 1
    if max_tokens:
        n = min(n, max_tokens)
    total, count = 0.0, 0
    windows = [(s, min(seq, n - s)) for s in range(0, n, seq)]
    for i in range(0, len(windows), 64):
        chunk = windows[i:i + 64]
        for s, length in chunk:
            x = tokens[s:s + length][None].to(device)
            y = tokens[s + 1:s + 1 + length][None].to(device)
            with autocast(device):
                logits = model(x)
            total += F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1),
                                     reduction="sum").item()
            count += length
    model.train()
    return total / count


def autocast(device):
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def generate(model, enc, question, device, max_new=80, temperature=0.0, seed=0):
    prompt = "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n" % question
    ids = enc.encode(prompt)
    stop = {enc.special["<|im_end|>"], enc.special["<|endoftext|>"]}
    gen = torch.Generator().manual_seed(seed)
    out = []
    model.eval()
    for _ in range(max_new):
        x = torch.tensor([ids + out], device=device)
        with autocast(device):
            logits = model(x)[0, -1].float().cpu()
        if temperature > 0:
            nxt = int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=gen))
        else:
            nxt = int(logits.argmax())
        if nxt in stop:
            break
        out.append(nxt)
    model.train()
    return enc.decode(out)


def train_loop(model, step_fn, opt, args, log):
    """Runs steps until the budget; returns the number of steps run."""
    warmup = args.warmup
    total = args.max_steps
    t_start = time.time()
    step = 0
    timed_from = None
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, args.lr, warmup)
        loss = step_fn()
        step += 1
        if step == 20:
            torch.cuda.synchronize() if args.device == "cuda" else None
            timed_from = (time.time(), step)
        if step == 120 and timed_from is not None:
            torch.cuda.synchronize() if args.device == "cuda" else None
            rate = (step - timed_from[1]) / (time.time() - timed_from[0])
            left = args.seconds - (time.time() - t_start)
            total = min(args.max_steps, step + int(rate * left))
            log("steps/s %.2f, tokens/s %.0f, total steps set to %d" %
                (rate, rate * args.batch * args.seq, total))
        if step % args.log_every == 0 or step == total:
            log("step %d/%d loss %.4f lr %.2e elapsed %.0fs" %
                (step, total, loss.item(), opt.param_groups[0]["lr"], time.time() - t_start))
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--hf", required=True)
    ap.add_argument("--seconds", type=float, default=360)
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--tiny", action="store_true", help="a tiny model for a CPU smoke test")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    logf = open(os.path.join(args.hf, "train.log"), "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    import bpe
    enc = bpe.load_tokenizer_json(os.path.join(args.hf, "tokenizer.json"))
    vocab = len(enc.ids)
    if args.tiny:
        cfg = Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    else:
        cfg = Config(vocab_size=vocab)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    train_tokens = load_tokens(os.path.join(args.data, "train.bin"))
    heldout_tokens = load_tokens(os.path.join(args.data, "heldout.bin"))
    log("device %s, torch %s, train tokens %d, held-out tokens %d" %
        (args.device, torch.__version__, train_tokens.numel(), heldout_tokens.numel()))
    model = LlamaForCausalLM(cfg).to(args.device)
    log("parameters: %d" % model.num_params())
    opt = make_optimizer(model, args.lr, args.device)
    fwd = model
    if args.device == "cuda" and not args.no_compile and hasattr(torch, "compile"):
        fwd = torch.compile(model)
    gpu_tokens = train_tokens.to(args.device)
    gen = torch.Generator(device=args.device).manual_seed(args.seed)

    def step_fn():
        starts = torch.randint(0, gpu_tokens.numel() - args.seq - 1, (args.batch,),
                               generator=gen, device=args.device)
        idx = starts[:, None] + torch.arange(args.seq + 1, device=args.device)[None, :]
        b = gpu_tokens[idx]
        x, y = b[:, :-1], b[:, 1:]
        with autocast(args.device):
            logits = fwd(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    def safe_step():
        nonlocal fwd
        try:
            return step_fn()
        except Exception as e:  # a torch.compile failure falls back to eager mode
            if fwd is model:
                raise
            log("compiled step failed (%r); continuing without torch.compile" % (e,))
            fwd = model
            return step_fn()

    t0 = time.time()
    steps = train_loop(model, safe_step, opt, args, log)
    train_time = time.time() - t0
    held = evaluate(model, heldout_tokens, args.seq, args.device)
    train_eval = evaluate(model, train_tokens, args.seq, args.device, max_tokens=heldout_tokens.numel())
    metrics = {"steps": steps, "train_seconds": round(train_time, 1),
               "tokens_seen": steps * args.batch * args.seq, "parameters": model.num_params(),
               "heldout_loss": held, "heldout_ppl": math.exp(held),
               "train_sample_loss": train_eval, "train_sample_ppl": math.exp(train_eval),
               "heldout_tokens": heldout_tokens.numel(), "train_tokens": train_tokens.numel()}
    log(json.dumps(metrics))
    export(model, cfg, enc, args.hf)
    samples = {q: generate(model, enc, q, args.device) for q in QUESTIONS}
    with open(os.path.join(args.hf, "metrics.json"), "w") as f:
        json.dump({"metrics": metrics, "samples_greedy": samples}, f, indent=1)
    for q, a in samples.items():
        log("Q: %s\nA: %s" % (q, a))


def export(model, cfg, enc, hf_dir):
    bos, eos = enc.special["<|endoftext|>"], enc.special["<|im_end|>"]
    hf = cfg.hf_dict(bos, eos)
    hf["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    with open(os.path.join(hf_dir, "config.json"), "w") as f:
        json.dump(hf, f, indent=1)
    with open(os.path.join(hf_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": [eos, bos], "pad_token_id": bos,
                   "do_sample": True, "temperature": 0.7, "top_p": 0.9}, f, indent=1)
    tensors = {k: v.detach().to(torch.float16).cpu().numpy()
               for k, v in model.state_dict().items() if not k.startswith("rope_")}
    safetensors_io.save(os.path.join(hf_dir, "model.safetensors"), tensors)


if __name__ == "__main__":
    main()
