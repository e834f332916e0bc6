"""Answer generation (``ask``): pgmm's VQA answering vs transformers' ``Blip2ForConditionalGeneration.generate``.

    python benchmarks/ask_generation.py [--preset proportional] [--questions 8] [--batch 4] [--rounds 3]
                                        [--json OUT]

Both hold the same weights (see ``stage2_common.py``) and answer the same questions about the same
images with BLIP-2's zero-shot VQA prompt ``Question: {} Short answer:`` and LAVIS's zero-shot VQA
decoding (at most 10 new tokens, at least 1, length penalty 0, no sampling), greedy and beam search
with 5 beams:

* ``pgmm``: :meth:`pgmm_core.objectives.vqa.VqaObjective.answer` — what ``pgmm ask`` and
  ``Assistant.ask_many`` run on a VQA run: ``[visual tokens] [BOS] prompt`` rows, left-padded, given to
  the LLM as ``inputs_embeds``.
* ``hf``: ``generate(pixel_values, input_ids, attention_mask)`` with ``input_ids`` the rows as
  transformers' BLIP-2 processor lays them out — ``<image>`` placeholders (one per query), BOS, the
  prompt ids — left-padded with the pad id, the attention mask 0 on the padding.

The questions differ in length, so every batch carries left padding. They take turns in one process
(the order alternates each round) and are timed in process CPU time with one torch thread. The answers
are compared token for token: greedy decoding must give identical answers.

The benchmark LLM's word tokenizer knows only the caption words; the prompt and question words are
appended to it here (new ids after the existing ones: no existing id moves), so that the prompt is
real tokens rather than ``<unk>``. ``--smoke`` redraws the tiny LLM's weight matrices with a larger
standard deviation (``--llm-init-std``): at the default 0.02, a one-layer, 32-wide random LLM answers
every question with the same tokens (attention adds about 1% to the residual stream), and the
comparison would then show nothing; at 0.2 the answers depend on the image, the question and the
padding's mask.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stage2_common as common

MODES = {"greedy": 1, "beam5": 5}
MAX_NEW_TOKENS = 10
QUESTION_WORDS = ("Question:", "Short", "answer:", "what", "colour", "is", "shape", "it?", "where", "or")


def question_for(index: int, colour: str, shape: str, place: str) -> str:
    """Four templates of 3 to 8 words, so that a batch's prompts differ in length."""
    return (f"what colour is the {shape} in the picture?",
            "what shape is it?",
            f"where is the {colour} {shape}?",
            f"is the {shape} small or large?")[index % 4]


def add_question_words(tokenizer) -> None:
    """Give the benchmark tokenizer the prompt's and questions' words, as ids after its own words."""
    for word in QUESTION_WORDS + tuple(w + "?" for w in common.caption_words()):
        if word not in tokenizer.ids:
            tokenizer.ids[word] = len(tokenizer.words)
            tokenizer.words.append(word)
    if len(tokenizer.words) > tokenizer.vocab_size:
        raise ValueError(f"vocab_size {tokenizer.vocab_size} < {len(tokenizer.words)} words")


def redraw_llm(model, std: float) -> None:
    """Draw the LLM's weight matrices again from N(0, std) (before transformers' copy is made)."""
    import torch

    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.llm.model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, std)


def make_questions(count: int, image_size: int):
    """The images of ``common.make_data`` and a question about each."""
    from pgmm_data.synthetic import render

    data = common.make_data(count, image_size, split="val")
    questions = [question_for(i, *render(0, "val", i, image_size)[1]) for i in range(count)]
    return data.images, questions


def settings_for(beams: int):
    from pgmm_core.config.sections import GenerationSection

    return GenerationSection(num_beams=beams, max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=1, length_penalty=0.0)


class HfAnswers:
    """transformers' BLIP-2 ``generate`` on prompt ids laid out as its processor does, left-padded."""

    def __init__(self, hf: common.HfBlip2, prompt: str, max_question_len: int) -> None:
        from pgmm_core.objectives.vqa import question_ids

        self.hf = hf
        self.prompt = prompt
        self.max_question_len = max_question_len
        self.question_ids = question_ids  # the same cut to max_question_len as pgmm's

    def inputs(self, questions: list[str]):
        torch = self.hf.torch
        tok = self.hf.tokenizer
        rows = [[tok.image_token_id] * self.hf.queries
                + self.question_ids(tok, self.prompt, q, self.max_question_len)[0] for q in questions]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        return ids, mask

    def __call__(self, images, questions: list[str], beams: int) -> list[str]:
        tok = self.hf.tokenizer
        ids, mask = self.inputs(questions)
        out = self.hf.module.generate(pixel_values=images, input_ids=ids, attention_mask=mask, num_beams=beams,
                                      max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=1, do_sample=False,
                                      length_penalty=0.0, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
        answers = []
        for row in out[:, ids.shape[1]:].tolist():  # the prompt comes back in front of the new tokens
            row = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
            answers.append(tok.decode(row, skip_special_tokens=True).strip())
        return answers


def run(args: argparse.Namespace) -> dict:
    import torch
    from pgmm_core.objectives.configs import VqaObjectiveConfig
    from pgmm_core.objectives.vqa import VqaObjective

    info = common.machine()
    sizes = common.PRESETS[args.preset]
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}", flush=True)
    print(f"model ({args.preset}): {sizes.describe()}", flush=True)
    model, _ = common.build_pgmm(sizes)
    add_question_words(model.llm.tokenizer)
    if args.llm_init_std:
        redraw_llm(model, args.llm_init_std)
    hf = common.HfBlip2(model, sizes)
    for m in (model, hf.module):
        m.eval()
    objective = VqaObjective(VqaObjectiveConfig())
    hf_answers = HfAnswers(hf, objective.config.prompt, objective.config.max_question_len)
    images, questions = make_questions(args.questions, sizes.image_size)
    runners = {"pgmm": lambda x, q, beams: objective.answer(model, x, q, settings_for(beams)),
               "hf": hf_answers}
    results = {}
    with torch.no_grad():
        for mode, beams in MODES.items():
            seconds = {n: [] for n in runners}
            answers = {n: [] for n in runners}
            for r in range(args.rounds):
                names = list(runners)
                order = names[r % len(names):] + names[: r % len(names)]
                for name in order:
                    start = time.process_time()
                    produced = []
                    for first in range(0, args.questions, args.batch):
                        part = slice(first, first + args.batch)
                        produced += runners[name](images[part], questions[part], beams)
                    seconds[name].append(time.process_time() - start)
                    if r == 0:
                        answers[name] = produced
                print(f"{mode} round {r + 1}/{args.rounds}: " + ", ".join(
                    f"{n} {args.questions / seconds[n][-1]:.2f} answers/s" for n in runners), flush=True)
            rate = {n: [args.questions / t for t in seconds[n]] for n in runners}
            results[mode] = {
                "num_beams": beams,
                "speed_pgmm_vs_hf": common.median([a / b for a, b in zip(rate["pgmm"], rate["hf"])]),
                "answers_per_s": {n: common.median(rate[n]) for n in runners},
                "answers_per_s_all": rate,
                "identical": sum(a == b for a, b in zip(answers["pgmm"], answers["hf"])),
                "compared": len(answers["pgmm"]),
                "distinct_answers": {n: len(set(answers[n])) for n in runners},
                "mean_words": sum(len(a.split()) for a in answers["pgmm"]) / max(1, len(answers["pgmm"])),
                "examples": {n: list(zip(questions[:2], answers[n][:2])) for n in runners},
            }
    return {"benchmark": "ask_generation", "machine": info, "preset": args.preset, "sizes": common.asdict(sizes),
            "questions": args.questions, "batch": args.batch, "rounds": args.rounds,
            "prompt": objective.config.prompt, "max_new_tokens": MAX_NEW_TOKENS, "min_new_tokens": 1,
            "length_penalty": 0.0, "llm_init_std": args.llm_init_std, "modes": results}


def table(result: dict) -> str:
    headers = ["decoding", "pgmm vs transformers", "answers/CPU-s: pgmm", "transformers", "pgmm = transformers"]
    rows = []
    for mode, r in result["modes"].items():
        rate = r["answers_per_s"]
        rows.append([f"{mode} (num_beams={r['num_beams']})", f"**{r['speed_pgmm_vs_hf']:.2f}x**",
                     f"{rate['pgmm']:.2f}", f"{rate['hf']:.2f}", f"{r['identical']}/{r['compared']}"])
    return common.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(common.PRESETS), default="proportional")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--llm-init-std", type=float, default=None,
                        help="redraw the LLM's weight matrices from N(0, std) (default: the model's own init)")
    parser.add_argument("--json", help="where to write the results (default benchmarks/results/ask_generation.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks that it runs")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.smoke:
        args.preset, args.questions, args.batch, args.rounds = "smoke", 8, 4, 1
        args.llm_init_std = args.llm_init_std or 0.2
    result = run(args)
    path = common.write_json("ask_generation" + ("_smoke" if args.smoke else ""), result, args.json)
    print(table(result))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
