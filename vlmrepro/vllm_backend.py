"""Optional vLLM backend for LLaVA-family generation (``models.<name>.backend: vllm``).

It keeps the transformers backend's contract with :func:`vlmrepro.evaluate.run_generation`: prompts are rendered
the same way, the Hugging Face processor decides which items overflow the context, and each output is decoded
from the prompt's token ids followed by the generated ids, as the transformers backend decodes its full sequences,
so answer extraction and scoring see the same text for the same generated tokens. vLLM schedules the batch
itself (continuous batching, paged KV cache), so a batch here is simply what is handed to it at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backends import Generation, pick_device, read_revision

FAMILIES = ("llava", "llava_next")


@dataclass
class VllmInputs:
    requests: list[dict]  # vLLM prompt dicts: {"prompt", "multi_modal_data": {"image": PIL image}}
    prompt_ids: list[list[int]]  # the processor's ids of each prompt (image placeholders expanded, no padding)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.prompt_ids]


class VllmModel:
    """Greedy generation with vLLM; the engine starts on first use."""

    manages_memory = True  # vLLM sizes its KV cache from gpu_memory_utilization
    padding_side = "none"  # each request runs alone: nothing is padded

    def __init__(self, model_dir, family: str, dtype: str = "bfloat16", device: str = "auto", name: str = "",
                 gpu_memory_utilization: float = 0.9, load_format: str = "auto"):  # fmt: skip
        from transformers import AutoConfig, AutoProcessor

        if family not in FAMILIES:
            raise ValueError(f"model {name or model_dir}: the vLLM backend serves {FAMILIES}, not {family!r}")
        self.model_dir, self.family, self.name = str(model_dir), family, name or str(model_dir)
        self.device = pick_device(device)
        self.dtype_name = dtype
        self.gpu_memory_utilization = gpu_memory_utilization
        self.load_format = load_format  # "dummy": random weights of the checkpoint's shapes (benchmarks)
        self.processor = AutoProcessor.from_pretrained(self.model_dir)
        self.tokenizer = self.processor.tokenizer
        self.max_context = int(AutoConfig.from_pretrained(self.model_dir).text_config.max_position_embeddings)
        self._llm = None

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def llm(self):
        if self._llm is None:
            try:
                import vllm
            except ImportError as err:
                raise RuntimeError(
                    f"model {self.name!r} is configured with backend: vllm, but vllm is not installed "
                    "(pip install vllm on a CUDA machine, or set backend: transformers)"
                ) from err
            self._llm = vllm.LLM(
                model=self.model_dir,
                dtype=self.dtype_name,
                max_model_len=self.max_context,
                limit_mm_per_prompt={"image": 1},
                gpu_memory_utilization=self.gpu_memory_utilization,
                load_format=self.load_format,
                seed=0,
            )
        return self._llm

    def instruction_overflows(self, prompts: list[str]) -> list[str | None]:
        """Only the language model's context limits a prompt here (vLLM serves no InstructBLIP)."""
        return [None] * len(prompts)

    def prompt_token_lower_bounds(self, prompts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(prompts)["input_ids"]]

    def preprocess(self, images, prompts: list[str]) -> VllmInputs:
        ids = [self.processor(images=[image], text=[prompt])["input_ids"][0] for image, prompt in zip(images, prompts)]
        requests = [{"prompt": p, "multi_modal_data": {"image": image}} for image, p in zip(images, prompts)]
        return VllmInputs(requests, [list(map(int, i)) for i in ids])

    def input_lengths(self, inputs: VllmInputs) -> list[int]:
        return inputs.lengths()

    def to_device(self, inputs: VllmInputs) -> VllmInputs:
        return inputs

    def decode(self, inputs: VllmInputs, generated: list[list[int]]) -> list[str]:
        """Prompt ids + generated ids decoded with special tokens skipped: the transformers backend's text."""
        sequences = [prompt + list(gen) for prompt, gen in zip(inputs.prompt_ids, generated)]
        return self.processor.batch_decode(sequences, skip_special_tokens=True)

    def generate(self, inputs: VllmInputs, max_new_tokens: int, min_new_tokens: int = 0) -> list[Generation]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, min_tokens=min_new_tokens)
        outputs = self.llm.generate(inputs.requests, params, use_tqdm=False)
        generated = [list(out.outputs[0].token_ids) for out in outputs]
        new_texts = self.processor.batch_decode(generated, skip_special_tokens=True)
        return [Generation(*pair) for pair in zip(self.decode(inputs, generated), new_texts)]

    @classmethod
    def for_job(cls, model_dir, run: dict) -> tuple["VllmModel", str]:
        if run["family"] == "chat":  # its prompts come from the processor's chat template (models.py)
            raise ValueError(f"model {run.get('model', model_dir)}: family chat runs on the transformers backend only")
        vlm = cls(model_dir, run["family"], run["dtype"], run["device"], name=run.get("model", ""))
        vlm.template = run.get("template")
        return vlm, read_revision(model_dir)

    def generation_settings(self) -> dict:
        return {"backend": "vllm", "padding_side": self.padding_side, "dtype": self.dtype_name, "device": self.device, "max_context": self.max_context}
