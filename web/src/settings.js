// The advanced settings panel: sampling sliders, system prompt, stop sequences and
// device (the API key is auth.js's). Values persist in localStorage and map onto the
// kebab-case fields of POST /chat/completions.

import { el, loadJson, saveJson } from "./ui.js";

const STORE = "inferd.settings";

// One row per slider; `field` is the chat request field. Defaults follow API.md.
// top-p starts at 0.01 because the server requires top-p > 0.
const SLIDERS = [
  { field: "temperature", label: "Temperature", min: 0, max: 2, step: 0.05, value: 0.7,
    digits: 2, hint: "Higher is more random; 0 is greedy." },
  { field: "top-p", label: "Top-P", min: 0.01, max: 1, step: 0.01, value: 0.95, digits: 2,
    hint: "Sample from the smallest set of tokens with this much probability." },
  { field: "top-k", label: "Top-K", min: 1, max: 100, step: 1, value: 40, digits: 0,
    hint: "Sample from the K most likely tokens." },
  { field: "max-token", label: "Max tokens", min: 128, max: 2048, step: 64, value: 512,
    digits: 0, hint: "Longest answer, in tokens." },
  { field: "repeat-penalty", label: "Repeat penalty", min: 1, max: 2, step: 0.05, value: 1.1,
    digits: 2, hint: "Discourages repeating earlier tokens; 1 is off." },
];

export class Settings {
  constructor(root) {
    this.root = root;
    this.inputs = {};
    this.systemPrompt = root.querySelector("#system-prompt");
    this.stop = root.querySelector("#stop");
    this.device = document.querySelector("#device");
    this.buildSliders(root.querySelector("#sliders"));
    this.restore(loadJson(STORE, {}));
    for (const field of [this.systemPrompt, this.stop, root.querySelector("#sliders")]) {
      field.addEventListener("input", () => this.save());
    }
    this.device.addEventListener("change", () => this.save());
    root.querySelector("#reset-settings").addEventListener("click", () => {
      this.restore({});
      this.save();
    });
  }

  buildSliders(container) {
    for (const spec of SLIDERS) {
      const output = el("output", { class: "slider-value" });
      const input = el("input", { type: "range", id: `set-${spec.field}`, min: spec.min,
        max: spec.max, step: spec.step, "aria-describedby": `hint-${spec.field}` });
      input.addEventListener("input", () => { output.textContent = this.format(spec); });
      this.inputs[spec.field] = { spec, input, output };
      container.append(el("div", { class: "slider" }, [
        el("label", { for: input.id, class: "slider-label" }, [spec.label, output]),
        input,
        el("small", { id: `hint-${spec.field}`, text: spec.hint }),
      ]));
    }
  }

  format(spec) {
    return Number(this.inputs[spec.field].input.value).toFixed(spec.digits);
  }

  restore(saved) {
    for (const { spec, input, output } of Object.values(this.inputs)) {
      input.value = saved[spec.field] ?? spec.value;
      output.textContent = this.format(spec);
    }
    this.systemPrompt.value = saved.systemPrompt ?? "";
    this.stop.value = saved.stop ?? "";
    this.device.value = saved.device ?? "";
  }

  save() {
    const values = {};
    for (const { spec, input } of Object.values(this.inputs)) values[spec.field] = Number(input.value);
    saveJson(STORE, { ...values, systemPrompt: this.systemPrompt.value,
      stop: this.stop.value, device: this.device.value });
  }

  // The sampling part of a chat request body; optional fields only when set, so the
  // server's defaults (e.g. the model's configured device) apply otherwise.
  chatFields() {
    const fields = {};
    for (const { spec, input } of Object.values(this.inputs)) {
      const value = Number(input.value);
      fields[spec.field] = spec.digits ? value : Math.round(value);
    }
    if (this.systemPrompt.value.trim()) fields["system-prompt"] = this.systemPrompt.value;
    const stop = this.stopSequences();
    if (stop.length) fields.stop = stop;
    if (this.device.value) fields.device = this.device.value;
    return fields;
  }

  // One stop sequence per line; "\n" and "\t" spelled out become the real characters,
  // since a newline could not otherwise be typed into a one-per-line list.
  stopSequences() {
    return this.stop.value.split("\n")
      .map((line) => line.replace(/\\n/g, "\n").replace(/\\t/g, "\t"))
      .filter((line) => line.length > 0)
      .slice(0, 16); // the server's limit
  }
}
