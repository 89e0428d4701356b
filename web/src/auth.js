// The API key: where it is kept, the prompt a 401 opens, and its field in Settings.
//
// By default the key lives in sessionStorage (this tab, until it closes); "Remember on
// this device" moves it to localStorage. It is only ever sent as `Authorization: Bearer`.

const KEY = "inferd.apiKey";

export class KeyStore {
  get() {
    return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
  }

  remembered() {
    return Boolean(localStorage.getItem(KEY));
  }

  set(key, remember) {
    sessionStorage.removeItem(KEY);
    localStorage.removeItem(KEY);
    if (key) (remember ? localStorage : sessionStorage).setItem(KEY, key);
  }
}

export class KeyControls {
  // dialog: the prompt; field and remember: the same choice in Settings;
  // onChange(): a new key was saved (retry what failed).
  constructor({ dialog, field, remember }, store, onChange) {
    Object.assign(this, { dialog, field, remember, store, onChange });
    this.dismissed = null; // the key the user declined to replace: no prompting again
    this.input = dialog.querySelector("input[type=password]");
    this.dialogRemember = dialog.querySelector("input[type=checkbox]");
    this.reason = dialog.querySelector(".dialog-reason");
    this.showStored();
    dialog.querySelector("form").addEventListener("submit", (event) => this.check(event));
    dialog.addEventListener("close", () => this.closed());
    dialog.querySelector(".dialog-cancel").addEventListener("click", () => dialog.close("cancel"));
    for (const input of [field, remember]) {
      input.addEventListener("change", () => this.save(field.value, remember.checked));
    }
  }

  showStored() {
    this.field.value = this.store.get();
    this.remember.checked = this.store.remembered();
  }

  save(key, remember) {
    this.store.set(key.trim(), remember);
    this.dismissed = null;
    this.field.value = this.store.get();
    this.remember.checked = remember; // the choice stands, even before there is a key
    this.onChange();
  }

  // Ask for a key (after a 401), unless asked already or declined for this key.
  prompt(message) {
    if (this.dialog.open || this.dismissed === this.store.get()) return;
    this.reason.textContent = message
      ? `The server answered: ${message}.`
      : "This server needs an API key.";
    this.input.value = "";
    this.dialogRemember.checked = this.remember.checked;
    this.dialog.returnValue = "";
    this.dialog.showModal();
    this.input.focus();
  }

  // Open the prompt on request (the status indicator), whatever was declined before.
  open() {
    this.dismissed = null;
    this.prompt("");
  }

  check(event) {
    if (event.submitter?.value === "save" && !this.input.value.trim()) {
      event.preventDefault(); // keep the dialog open: an empty key is no answer
      this.input.focus();
    }
  }

  // Saved, cancelled or closed with Esc.
  closed() {
    if (this.dialog.returnValue === "save") this.save(this.input.value, this.dialogRemember.checked);
    else this.dismissed = this.store.get();
  }
}
