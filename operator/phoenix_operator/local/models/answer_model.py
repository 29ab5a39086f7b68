"""A versioned question-answering model for Triton's Python backend: each version answers from its
own ``answers.json`` (question → answer), the stand-in for a fine-tuned checkpoint's weights.

Input ``PROMPT`` (TYPE_STRING, dims [1]); output ``TEXT_OUTPUT`` (TYPE_STRING, dims [1]). Two
version directories with different tables answer differently, so a test can tell which version
Triton serves. Questions are matched case- and whitespace-insensitively; others get ``UNKNOWN``.
"""

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

UNKNOWN = "I do not know."


def _key(text: str) -> str:
    return " ".join(text.lower().split())


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        directory = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(directory, "answers.json"), encoding="utf-8") as handle:
            self.answers = {_key(q): a for q, a in json.load(handle).items()}

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            prompts = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy()
            answers = np.array(
                [
                    [self.answers.get(_key(p.decode("utf-8") if isinstance(p, bytes) else str(p)), UNKNOWN)]
                    for p in prompts.reshape(-1)
                ],
                dtype=object,
            ).reshape(prompts.shape)
            out = pb_utils.Tensor("TEXT_OUTPUT", answers)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
