// Light or dark (the default). theme-init.js applies the stored choice before the first
// paint; this module owns the toggle.

import { icon } from "./ui.js";

const STORE = "inferd.theme";

export class Theme {
  constructor(button) {
    this.button = button;
    button.addEventListener("click", () => this.set(this.current === "light" ? "dark" : "light"));
    this.show();
  }

  get current() {
    return document.documentElement.dataset.theme === "light" ? "light" : "dark";
  }

  set(theme) {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem(STORE, theme);
    this.show();
  }

  show() {
    const light = this.current === "light";
    this.button.replaceChildren(icon(light ? "moon" : "sun"));
    this.button.title = light ? "Dark theme" : "Light theme";
    this.button.setAttribute("aria-label", this.button.title);
  }
}
