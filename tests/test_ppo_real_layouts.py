"""PPO on the layouts of real runs: two tokenizer objects, a reward model with another vocabulary and chat template,
a value model that cannot read the policy's tokens, a checkpoint's own generation settings, a custom stop token,
attention dropout, bf16 log-probabilities."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, LlamaForCausalLM

from calrl.errors import ConfigError
from calrl.rewards.pipeline import RewardPipeline, RewardPipelineConfig
from calrl.tiny.models import (
    build_scripted_causal_lm,
    build_tiny_causal_lm,
    build_tiny_reward_model,
    build_word_tokenizer,
    tiny_config,
)
from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer
from calrl.trainers.ppo_core import token_logprobs
from calrl.trainers.ppo_rollout import left_pad

QUESTIONS = ["what is 2 + 2 ?", "what is 3 + 1 ?", "what is 1 + 4 ?", "what is 2 + 3 ?"]
SYSTEM = "answer briefly and state your confidence"
RESPONSES = ["4 . confidence : 8", "4", "5 . confidence : 2", "i don't know"]
ENDED = [True, False, True, True]
# another reward-model layout: its own chat template (no role tokens of the policy's), other token ids
OTHER_TEMPLATE = ("{% for m in messages %}### {{ m['role'] }} : {{ m['content'] }} ; {% endfor %}"
                  "{% if add_generation_prompt %}### assistant : {% endif %}")


def conversations():
    return [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS]


def policy_tokenizer():
    return build_word_tokenizer([SYSTEM, *QUESTIONS, *RESPONSES])


def other_tokenizer():
    tok = build_word_tokenizer(["zebra yak walrus vole", "###", "system user assistant", SYSTEM, *QUESTIONS,
                                *RESPONSES])
    tok.chat_template = OTHER_TEMPLATE
    return tok


def rollouts(tok):
    """Left-padded chat-templated queries + right-padded responses (EOS where they ended), as PPO builds them."""
    rows = [tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True), add_special_tokens=False)
            ["input_ids"] for m in conversations()]
    queries = left_pad(rows, tok.pad_token_id)
    answers = [tok(r, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if e else [])
               for r, e in zip(RESPONSES, ENDED)]
    responses = torch.full((len(answers), max(map(len, answers)) + 2), tok.pad_token_id)
    for i, a in enumerate(answers):
        responses[i, :len(a)] = torch.tensor(a)
    return torch.cat([queries, responses], 1), queries.shape[1]


def scores_of(reward_tokenizer, policy_tok, rm, **cfg):
    qr, ctx = rollouts(policy_tok)
    pipe = RewardPipeline(RewardPipelineConfig(**cfg), rm, reward_tokenizer=reward_tokenizer,
                          policy_tokenizer=policy_tok)
    with torch.no_grad():
        scores, _ = pipe.score_rollouts(qr, ctx, policy_tok.pad_token_id, prompts=conversations())
    return pipe, scores


def test_two_tokenizer_objects_of_one_folder_score_like_one_shared_object(tmp_path):
    tok = policy_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    policy_tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    reward_tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert policy_tok is not reward_tok
    rm = build_tiny_reward_model(policy_tok, seed=3).eval()
    _, shared = scores_of(None, policy_tok, rm)
    copy_pipe, copied = scores_of(reward_tok, policy_tok, rm)
    assert copy_pipe.reuses_tokens
    assert torch.equal(shared, copied)
    # the text path (taken when the tokenizers differ, here by one unused added token) reads the same tokens
    reward_tok.add_tokens(["unusedword"])
    text_pipe, text = scores_of(reward_tok, policy_tok, rm)
    assert not text_pipe.reuses_tokens
    torch.testing.assert_close(text, shared, rtol=1e-5, atol=1e-5)  # right vs left padding: float order only
    # PPO-C strips the confidence statement: both paths score the same stripped texts
    _, stripped_shared = scores_of(None, policy_tok, rm, ppo_c_variant="difference", ppo_c_init_average=0.0)
    _, stripped_text = scores_of(reward_tok, policy_tok, rm, ppo_c_variant="difference", ppo_c_init_average=0.0)
    torch.testing.assert_close(stripped_text, stripped_shared, rtol=1e-5, atol=1e-5)


def test_rm_with_another_vocabulary_and_template_scores_the_conversation_alone():
    policy_tok, rm_tok = policy_tokenizer(), other_tokenizer()
    assert rm_tok.convert_tokens_to_ids("what") != policy_tok.convert_tokens_to_ids("what")
    rm = build_tiny_reward_model(rm_tok, seed=5).eval()
    pipe, scores = scores_of(rm_tok, policy_tok, rm)
    assert not pipe.reuses_tokens
    for i, messages in enumerate(conversations()):
        text = rm_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert text.startswith(f"### system : {SYSTEM} ; ### user : ")  # the system turn and the roles are kept
        ids = rm_tok(text, add_special_tokens=False)["input_ids"] + \
            rm_tok(RESPONSES[i], add_special_tokens=False)["input_ids"] + ([rm_tok.eos_token_id] if ENDED[i] else [])
        with torch.no_grad():
            alone = rm(input_ids=torch.tensor([ids])).logits[0, 0]
        torch.testing.assert_close(scores[i], alone, rtol=1e-5, atol=1e-5)


def ppo_args(tmp_path, **kwargs):
    settings = {"output_dir": str(tmp_path / "out"), "use_cpu": True, "report_to": "none", "seed": 0,
                "num_train_epochs": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                "num_mini_batches": 1, "response_length": 8, "num_ppo_epochs": 1, "stop_token": "eos",
                "num_sample_generations": 0, "logging_steps": 1, "disable_tqdm": True, "save_strategy": "no",
                "learning_rate": 1e-3}
    settings.update(kwargs)
    return CalibratedPPOConfig(**settings)


def test_trainer_gives_the_rm_the_conversation_in_its_own_tokens(tmp_path):
    policy_tok, rm_tok = policy_tokenizer(), other_tokenizer()
    rm = build_tiny_reward_model(rm_tok, seed=5)
    trainer = CalibratedPPOTrainer(ppo_args(tmp_path), policy_tok, build_tiny_causal_lm(policy_tok), None, rm,
                                   Dataset.from_dict({"prompt": conversations()}), None,
                                   reward_tokenizer=rm_tok)
    idx = list(range(4))
    queries = left_pad([trainer.prompts.input_ids[i] for i in idx], policy_tok.pad_token_id)
    rollout = trainer.rollout(queries, None, [trainer.prompts.prompts[i] for i in idx])
    last = trainer.reward_pipeline.last
    for i, messages in enumerate(conversations()):
        response = rollout.responses[i]
        ended = bool((response == policy_tok.eos_token_id).any())
        cut = response[:int((response == policy_tok.eos_token_id).nonzero()[0])] if ended else response
        text = policy_tok.decode(cut[cut != policy_tok.pad_token_id], skip_special_tokens=True)
        ids = rm_tok(rm_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"] + rm_tok(text, add_special_tokens=False)["input_ids"] + \
            ([rm_tok.eos_token_id] if ended else [])
        with torch.no_grad():
            alone = rm(input_ids=torch.tensor([ids])).logits[0, 0]
        torch.testing.assert_close(last.rm_raw[i], alone.float(), rtol=1e-5, atol=1e-5)


def test_value_model_with_another_vocabulary_is_refused_in_one_line(tmp_path):
    policy_tok, other = policy_tokenizer(), other_tokenizer()
    data = Dataset.from_dict({"prompt": conversations()})
    rm = build_tiny_reward_model(other, seed=5)
    with pytest.raises(ConfigError, match="value model's tokenizer has another vocabulary") as err:
        CalibratedPPOTrainer(ppo_args(tmp_path), policy_tok, build_tiny_causal_lm(policy_tok), None, rm, data,
                             build_tiny_reward_model(other, seed=6), reward_tokenizer=other, value_tokenizer=other)
    assert "\n" not in str(err.value)
    # no tokenizer given: a value model that embeds fewer ids than the policy's vocabulary is refused too
    small = build_word_tokenizer(["what is"])
    assert len(small) < len(policy_tok)
    with pytest.raises(ConfigError, match="embeds .* token ids"):
        CalibratedPPOTrainer(ppo_args(tmp_path), policy_tok, build_tiny_causal_lm(policy_tok), None, rm, data,
                             build_tiny_reward_model(small, seed=6), reward_tokenizer=other)


def first_kl(trainer):
    trainer.train()
    return next(log for log in trainer.state.log_history if "objective/kl" in log)["objective/kl"]


def test_rollouts_ignore_the_checkpoints_generation_settings(tmp_path):
    """A checkpoint's repetition_penalty (and friends) must not shape the rollout's log-probabilities: with the
    policy equal to the reference, step one's KL is zero."""
    tok = policy_tokenizer()
    policy = build_tiny_causal_lm(tok, seed=0)
    policy.generation_config.repetition_penalty = 1.1
    policy.generation_config.no_repeat_ngram_size = 2
    policy.generation_config.top_k = 5
    trainer = CalibratedPPOTrainer(ppo_args(tmp_path, max_steps=1), tok, policy, None,
                                   build_tiny_reward_model(tok, seed=2), Dataset.from_dict({"prompt": conversations()}),
                                   build_tiny_reward_model(tok, seed=1))
    assert abs(first_kl(trainer)) < 1e-5
    assert policy.generation_config.repetition_penalty == 1.1  # the model's own settings are left as they were


def test_missing_eos_penalty_reads_the_stop_token(tmp_path):
    """With a custom stop token, a response that reached it is not penalised (truncation and penalty agree)."""
    tok = policy_tokenizer()
    chain = [("<|assistant|>", ["4"]), ("4", ["."]), (".", ["confidence"]), ("confidence", [":"]), (":", ["8"]),
             ("8", [tok.eos_token])]
    policy = build_scripted_causal_lm(tok, chain, seed=0)
    stop = tok.convert_tokens_to_ids(".")
    trainer = CalibratedPPOTrainer(ppo_args(tmp_path, stop_token=None, stop_token_id=stop, missing_eos_penalty=1.0),
                                   tok, policy, None, build_tiny_reward_model(tok, seed=2),
                                   Dataset.from_dict({"prompt": conversations()}), build_tiny_reward_model(tok, seed=1))
    queries = left_pad(trainer.prompts.input_ids, tok.pad_token_id)
    rollout = trainer.rollout(queries, None, trainer.prompts.prompts)
    stopped = (rollout.responses == stop).any(1)
    assert stopped.all()
    torch.testing.assert_close(rollout.scores, trainer.reward_pipeline.last.final.float())


def test_attention_dropout_is_off_in_train_mode(tmp_path):
    tok = policy_tokenizer()
    config = tiny_config(tok)
    config.attention_dropout = 0.5
    torch.manual_seed(0)
    policy = LlamaForCausalLM(config)
    CalibratedPPOTrainer(ppo_args(tmp_path), tok, policy, None, build_tiny_reward_model(tok, seed=2),
                         Dataset.from_dict({"prompt": conversations()}), build_tiny_reward_model(tok, seed=1))
    policy.train()
    ids = torch.tensor([tok("what is 2 + 2 ?", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(policy(ids).logits, policy(ids).logits, rtol=0, atol=0)
    assert policy.config.attention_dropout == 0.5  # the saved config keeps the model's own value


def test_low_precision_log_probabilities_stay_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 50).to(torch.bfloat16)
    tokens = torch.randint(0, 50, (2, 5))
    out = token_logprobs(logits, tokens)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, token_logprobs(logits.float(), tokens), rtol=0, atol=1e-6)


def test_checkpoint_is_marked_complete_after_the_callbacks_files(tmp_path):
    """on_save callbacks (W&B run id, the eval's copy) write into the checkpoint before its completion marker."""
    from transformers import TrainerCallback

    from calrl.trainers.ppo_checkpoint import COMPLETE_MARKER, complete_checkpoints

    seen = []

    class WritesOnSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = tmp_path / "out" / f"checkpoint-{state.global_step}"
            seen.append((folder.is_dir(), (folder / COMPLETE_MARKER).exists()))
            (folder / "callback_file.json").write_text("{}")

    tok = policy_tokenizer()
    trainer = CalibratedPPOTrainer(ppo_args(tmp_path, max_steps=1, save_strategy="steps", save_steps=1), tok,
                                   build_tiny_causal_lm(tok), None, build_tiny_reward_model(tok, seed=2),
                                   Dataset.from_dict({"prompt": conversations()}), build_tiny_reward_model(tok, seed=1),
                                   callbacks=[WritesOnSave()])
    trainer.train()
    assert seen == [(True, False)]  # in place, not yet complete, while the callbacks write
    [checkpoint] = complete_checkpoints(tmp_path / "out")
    assert (checkpoint / "callback_file.json").is_file() and (checkpoint / COMPLETE_MARKER).is_file()
