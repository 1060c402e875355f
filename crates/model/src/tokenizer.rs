//! Text <-> token ids: HF `tokenizer.json` through the `tokenizers` crate, the chat template from
//! `tokenizer_config.json` rendered with minijinja, and the rebuilding of a `tokenizer.json` from
//! the vocabulary and merges stored in a GGUF file.

use std::path::Path;

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::ModelError;
use crate::gguf::GgufFile;

/// A checkpoint's tokenizer plus its chat template.
pub struct TextTokenizer {
    pub tokenizer: Tokenizer,
    /// The parsed `tokenizer_config.json` (empty object when the file is absent).
    pub config: Value,
}

impl TextTokenizer {
    /// Reads `tokenizer.json` (required) and `tokenizer_config.json` (optional) from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::file(&path, "tokenizer.json is missing from the model directory"));
        }
        let tokenizer =
            Tokenizer::from_file(&path).map_err(|e| ModelError::file(&path, format!("cannot read tokenizer: {e}")))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let config = if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
            serde_json::from_str(&text).map_err(|e| ModelError::file(&cfg_path, format!("not valid JSON: {e}")))?
        } else {
            json!({})
        };
        Ok(TextTokenizer { tokenizer, config })
    }

    /// The tokenizer of a model directory or of a `.gguf` file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        if path.is_file() { Self::from_gguf(&GgufFile::open(path)?) } else { Self::from_dir(path) }
    }

    /// The tokenizer stored in a GGUF file's metadata, or, when the file has none (no
    /// `tokenizer.ggml.model`, or `none`), the `tokenizer.json` (and `tokenizer_config.json`)
    /// beside it.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let model = file.metadata.get("tokenizer.ggml.model").map(|v| v.as_str());
        if matches!(model, None | Some(Some("none")))
            && let Some(dir) = file.path.parent()
            && dir.join("tokenizer.json").exists()
        {
            return Self::from_dir(dir);
        }
        let imported = tokenizer_from_gguf(file)?;
        Ok(TextTokenizer { tokenizer: imported.tokenizer, config: imported.config })
    }

    /// Token ids of `text`, with whatever special tokens the tokenizer's post-processor adds
    /// (as `tokenizer(text)` does in transformers).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.encode_with(text, true)
    }

    /// Token ids of `text` alone, no special tokens added (a continuation after a prompt).
    pub fn encode_continuation(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, add_special: bool) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .tokenizer
            .encode(text, add_special)
            .map_err(|e| ModelError::Invalid(format!("tokenizer failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A single user turn wrapped in the chat template, with the assistant prompt appended,
    /// tokenized without extra special tokens (as `apply_chat_template(tokenize=True)` does).
    pub fn encode_chat(&self, user_message: &str) -> Result<Vec<u32>, ModelError> {
        let text = self.render_chat(user_message)?;
        self.encode_with(&text, false)
    }

    /// The chat template rendered for one user message.
    pub fn render_chat(&self, user_message: &str) -> Result<String, ModelError> {
        let template = self.config.get("chat_template").and_then(Value::as_str).ok_or_else(|| {
            ModelError::Invalid("this model has no chat template (tokenizer_config.json `chat_template`)".into())
        })?;
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template)
            .map_err(|e| ModelError::Invalid(format!("chat template does not parse: {e}")))?;
        let ctx = minijinja::context! {
            messages => vec![minijinja::context! { role => "user", content => user_message }],
            add_generation_prompt => true,
            bos_token => self.special_token("bos_token"),
            eos_token => self.special_token("eos_token"),
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(|e| ModelError::Invalid(format!("chat template failed: {e}")))
    }

    fn special_token(&self, key: &str) -> String {
        match self.config.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).unwrap_or("").to_string(),
            _ => String::new(),
        }
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer.decode(ids, true).map_err(|e| ModelError::Invalid(format!("tokenizer cannot decode: {e}")))
    }

    /// The text one token stands for (its decoded form; special tokens as written).
    pub fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Ids that end generation: the config's eos plus the chat end-of-turn token if present.
    pub fn stop_ids(&self, config_eos: &[u32]) -> Vec<u32> {
        let mut ids = config_eos.to_vec();
        for tok in [self.special_token("eos_token"), "<|im_end|>".into(), "<|eot_id|>".into(), "<|endoftext|>".into()] {
            if let Some(id) = self.token_to_id(&tok)
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
        ids
    }
}

/// A tokenizer rebuilt from GGUF metadata, and the tokenizer_config.json to write beside it.
pub struct ImportedTokenizer {
    pub tokenizer: Tokenizer,
    pub config: Value,
}

/// The split regex (before byte-level mapping) that llama.cpp uses for each `tokenizer.ggml.pre`.
fn pre_tokenizer_for(pre: &str) -> Option<Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split =
        |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    Some(match pre {
        // GPT-2 regex on the byte-level side; StarCoder-family vocabularies split digits one by one.
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        "smollm" | "starcoder" | "refact" | "codeshell" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "llama3" | "llama-bpe" | "llama-v3" => json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false)]}),
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false)]}),
        _ => return None,
    })
}

pub(crate) fn tokenizer_from_gguf(file: &GgufFile) -> Result<ImportedTokenizer, ModelError> {
    let parts = file.tokenizer_parts()?;
    let pre_tokenizer = pre_tokenizer_for(parts.pre).ok_or_else(|| {
        ModelError::file(
            parts.path,
            format!(
                "tokenizer.ggml.pre `{}` is not supported (default, gpt2, smollm, starcoder, llama3, qwen2)",
                parts.pre
            ),
        )
    })?;
    let mut vocab = serde_json::Map::with_capacity(parts.tokens.len());
    let mut added = Vec::new();
    for (id, (tok, ty)) in parts.tokens.iter().zip(&parts.token_types).enumerate() {
        vocab.insert(tok.to_string(), json!(id));
        // 3 = control, 4 = user-defined: matched whole, never split by BPE.
        if *ty == 3 || *ty == 4 {
            added.push(json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": *ty == 3}));
        }
    }
    let merges: Vec<Value> = parts
        .merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| ModelError::file(parts.path, format!("merge `{m}` is not two tokens")))
        })
        .collect::<Result<_, _>>()?;
    let token_str = |id: Option<u32>| id.and_then(|i| parts.tokens.get(i as usize)).map(|s| s.to_string());
    let bos = token_str(parts.bos);
    let eos = token_str(parts.eos);
    let post_processor = match (&bos, parts.add_bos) {
        (Some(bos), true) => json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos.clone(): {"id": bos, "ids": [parts.bos], "tokens": [bos]}}}),
        _ => json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
    };
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    });
    let tokenizer: Tokenizer = doc
        .to_string()
        .parse()
        .map_err(|e| ModelError::file(parts.path, format!("rebuilt tokenizer is invalid: {e}")))?;
    let mut config = json!({
        "add_bos_token": parts.add_bos,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    let obj = config.as_object_mut().expect("object literal");
    if let Some(t) = parts.chat_template {
        obj.insert("chat_template".into(), t.into());
    }
    if let Some(b) = bos {
        obj.insert("bos_token".into(), b.into());
    }
    if let Some(e) = eos {
        obj.insert("eos_token".into(), e.into());
    }
    Ok(ImportedTokenizer { tokenizer, config })
}
