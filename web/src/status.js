// The connection indicator (in the sidebar, and in the top bar on narrow screens).
//
// /readiness is public, so it cannot tell whether the API key works: the indicator
// combines it with what the last API call said (Api's onAuth). A server that is up but
// refuses the key shows "Unauthorized", never "Connected".

const VIEWS = {
  connecting: ["warn", "Connecting…"],
  ready: ["ok", "Connected"],
  loading: ["warn", "Loading models…"],
  failed: ["bad", "Model failed to load"],
  unauthorized: ["bad", "Unauthorized"],
  offline: ["bad", "Disconnected"],
};

export class Status {
  // boxes: elements with a .status-text child; a click on one while unauthorized calls
  // onUnauthorizedClick (to ask for a key).
  constructor(boxes, onUnauthorizedClick) {
    this.boxes = boxes;
    this.readiness = { status: "connecting" };
    this.auth = { ok: null, message: "" };
    for (const box of boxes) {
      box.addEventListener("click", () => {
        if (this.state === "unauthorized") onUnauthorizedClick();
      });
    }
    this.render();
  }

  get state() {
    if (this.readiness.status === "offline") return "offline";
    if (this.auth.ok === false) return "unauthorized";
    return this.readiness.status;
  }

  setReadiness(readiness) {
    this.readiness = readiness;
    this.render();
  }

  setAuth(ok, message = "") {
    this.auth = { ok, message };
    this.render();
  }

  render() {
    const state = this.state;
    const [tone, text] = VIEWS[state] ?? ["warn", `Server: ${state}`];
    const title = this.detail(state);
    for (const box of this.boxes) {
      box.dataset.tone = tone;
      box.dataset.state = state;
      box.querySelector(".status-text").textContent = text;
      box.title = title;
    }
  }

  detail(state) {
    const detail = this.readiness.detail ?? {};
    if (state === "unauthorized") return `${this.auth.message || "API key refused"} - click to enter a key`;
    if (state === "ready") return `${detail.models_available} model(s) loaded`;
    if (state === "loading") return `Loading: ${(detail.loading || []).join(", ")}`;
    if (state === "failed") {
      return Object.entries(detail.errors || {}).map(([model, error]) => `${model}: ${error}`)
        .join("\n");
    }
    return detail.error || "";
  }
}
