"""The baseline of bench/train_throughput.py: fine-tuning written the way it is usually
written by hand: HF Trainer + DeepSpeed ZeRO-2, every row padded to max length, the
model's default attention.

    python bench/train_baseline.py --model DIR --data rows.jsonl --output-dir OUT --seq 2048

It trains on `{"text": ...}` rows and prints, for the bench, `bench-data` (non-padding tokens
per epoch), one `bench-step` line per optimizer step (wall clock) and `bench-done` (peak GPU
memory). Without a launcher it needs RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

# The ZeRO-2 config from the HF DeepSpeed integration docs ("auto": filled from the arguments).
ZERO2 = {
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto"},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
    "gradient_clipping": "auto",
    "zero_optimization": {
        "stage": 2,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_scatter": True,
        "allgather_partitions": True,
        "allgather_bucket_size": 200_000_000,
        "reduce_bucket_size": 200_000_000,
    },
}


def report(kind: str, payload: dict[str, Any]) -> None:
    print(f"{kind} {json.dumps(payload)}", flush=True)


class StepClock(TrainerCallback):
    """The bench's only view into the run: the wall clock at each logged step."""

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs and "loss" in logs and state.is_world_process_zero:
            step = {"step": state.global_step, "total_steps": state.max_steps}
            report("bench-step", {**step, "time": time.time(), "loss": logs["loss"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    with open(args.data, encoding="utf-8") as rows:
        texts = [json.loads(line)["text"] for line in rows if line.strip()]
    encoded = tokenizer(texts, truncation=True, max_length=args.seq, padding="max_length")
    train_rows = [
        {"input_ids": ids, "attention_mask": mask}
        for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
    ]
    report(
        "bench-data",
        {"rows": len(train_rows), "tokens_per_epoch": sum(map(sum, encoded["attention_mask"]))},
    )

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        seed=args.seed,
        bf16=torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        deepspeed=ZERO2,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_rows,
        # labels = input_ids with the pad positions set to -100
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[StepClock()],
    )
    result = trainer.train()
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    report("bench-done", {"train_loss": result.training_loss, "peak_memory_bytes": peak})


if __name__ == "__main__":
    main()
