from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from calrl.tiny.models import (
    build_tiny_causal_lm,
    build_tiny_reward_model,
    build_word_tokenizer,
    save_pretrained,
)


def test_tokenizer_round_trips_numbers_and_confidence(tmp_path):
    tok = build_word_tokenizer(["The capital of Zorbia is Quelm."])
    tok.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = "the capital of zorbia is quelm. answer: 1234. confidence: 8"
    for t in (tok, loaded):
        assert t.decode(t(text)["input_ids"]) == text
    assert loaded.padding_side == "left"
    assert "<|assistant|>" in loaded.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)


def test_tiny_models_save_load_and_generate(tmp_path):
    tok = build_word_tokenizer(["what is 2 + 2 ?"])
    save_pretrained(build_tiny_causal_lm(tok), tok, tmp_path / "lm")
    save_pretrained(build_tiny_reward_model(tok), tok, tmp_path / "rm")
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    rm = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    enc = tok(["what is 2 + 2 ?", "2"], return_tensors="pt", padding=True)
    out = lm.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2 and enc.input_ids.shape[1] < out.shape[1] <= enc.input_ids.shape[1] + 4
    assert rm(**enc).logits.shape == (2, 1)


def test_tokenizer_beside_model_round_trips_through_auto_tokenizer(tmp_path):
    """transformers forces its own tokenizer class for some architectures; the tiny one must not be one."""
    tok = build_word_tokenizer(["the answer is"])
    save_pretrained(build_tiny_causal_lm(tok), tok, tmp_path / "m")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "m")
    text = "confidence: 8 the answer is 42"
    assert loaded.decode(loaded(text)["input_ids"]) == text
