// Runs before the stylesheet applies (a classic script in <head>), so a page set to the
// light theme never flashes dark first. theme.js owns the setting itself.
try {
  if (localStorage.getItem("inferd.theme") === "light") {
    document.documentElement.dataset.theme = "light";
  }
} catch {
  // storage blocked: the default (dark) theme
}
