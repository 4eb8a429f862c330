"""Constants of the original Quicksviewer inference path.

Only strings and sentinels live here: token ids always come from the tokenizer.

* ``IMAGE_PLACEHOLDER`` is never a vocabulary token. The original splits the prompt on
  this literal and inserts ``IMAGE_TOKEN_INDEX`` (-200) between the separately tokenized
  chunks (``tokenizer_image_token``); every sentinel is later replaced by a block of
  ``num_queries`` visual embeddings.
* ``MARKERS`` lists the 8 added tokens in the order the original adds them in
  ``initialize_vision_tokenizer`` (patch, video, im, thumbnail pairs), which fixes
  their ids (151665..151672 on top of the Qwen2.5 vocabulary). The key of each entry
  names the ``<key>_token_id`` field of the converted SGLang config.
"""

IMAGE_PLACEHOLDER = "<image>"
IMAGE_TOKEN_INDEX = -200

MARKERS = {
    "patch_start": "<patch_start>",
    "patch_end": "<patch_end>",
    "video_start": "<video_start>",
    "video_end": "<video_end>",
    "im_start": "<im_start>",
    "im_end": "<im_end>",
    "thumbnail_start": "<thumbnail_start>",
    "thumbnail_end": "<thumbnail_end>",
}



class Template:
    """A conversation template of the original (conversation.py) for one user turn:
    ``user_role + message + separator + assistant_role``, with no system turn
    (``preprocess_qwen_2`` / ``preprocess_llama_3`` force ``system = ""``)."""

    def __init__(self, user_role: str, assistant_role: str, separator: str):
        self.user_role = user_role
        self.assistant_role = assistant_role
        self.separator = separator

    def prompt(self, user_message: str) -> str:
        return self.user_role + user_message + self.separator + self.assistant_role


# conv_qwen2 (conversation.py:458-467): ChatML roles.
QWEN2_TEMPLATE = Template("<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n")
# llama_3_chat (conversation.py:442-455); the assistant role is "system" (sic).
LLAMA3_TEMPLATE = Template(
    "<|start_header_id|>user<|end_header_id|>\n\n",
    "<|start_header_id|>system<|end_header_id|>\n\n",
    "<|eot_id|>",
)

# The two language models of the original: checkpoint model_type -> (the language
# model's transformers model_type, the template the builder pairs with it:
# builder.py:71-86 loads LlavaLlamaForCausalLM for a "llama_3" version and
# LlavaQwenForCausalLM otherwise).
VARIANTS = {
    "quicksviewer_qwen": ("qwen2", QWEN2_TEMPLATE),
    "quicksviewer_llama": ("llama", LLAMA3_TEMPLATE),
}

# SigLIP features are resized from 27x27 to this grid (hard-coded interp=576 upstream).
FEATURE_GRID = 24
# Frames per cube on average (FPQ) and the Gumbel-softmax temperature used at inference.
FRAMES_PER_CUBE = 5
CUBING_TEMPERATURE = 0.5
CUBING_MOMENTUM = 0.8
# Defaults of serve/cli.py and the eval scripts: at most 420 frames sampled at 1 fps.
VIDEO_MAX_FRAMES = 420
VIDEO_FPS = 1
