// Builds the chat page: src/ -> static/ (committed, so `pip install inferd` needs no Node).
//
//   npm ci && npm run build      (.ci/run does this and fails if static/ changes)
//
// The output must be a pure function of src/ and package-lock.json: esbuild with pinned
// versions, no timestamps, no content hashes in names, no source maps with local paths.
import { copyFile, readFile, readdir, rm, stat } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const OUT = "static";

// KaTeX's stylesheet offers each font as woff2, woff and ttf; every browser that can run
// this page reads woff2, so ship only those (~300 KB instead of ~1.2 MB).
const woff2Only = {
  name: "katex-woff2-only",
  setup(build) {
    build.onLoad({ filter: /katex[\\/]dist[\\/]katex\.css$/ }, async (args) => {
      const css = await readFile(args.path, "utf8");
      const contents = css.replace(/,\s*url\([^)]*\.(?:woff|ttf)\)\s*format\("(?:woff|truetype)"\)/g, "");
      return { contents, loader: "css" };
    });
  },
};

// markdown-it-texmath require()s KaTeX, the page imports it: resolve both to KaTeX's ES
// module, or the bundle would hold two copies.
const oneKatex = {
  name: "one-katex",
  setup(build) {
    build.onResolve({ filter: /^katex$/ }, (args) => {
      if (args.kind !== "require-call") return undefined;
      return build.resolve("katex", { kind: "import-statement", resolveDir: args.resolveDir });
    });
  },
};

await rm(OUT, { recursive: true, force: true });
const page = await esbuild.build({
  entryPoints: { app: "src/main.js", style: "src/styles/app.css" },
  bundle: true,
  format: "esm", // app.js exports its renderer, for the browser tests and the benchmark
  target: ["chrome111", "firefox115", "safari16.4"],
  minify: true,
  legalComments: "eof", // the bundled libraries' licence notices stay in the bundle
  charset: "utf8",
  outdir: OUT,
  assetNames: "fonts/[name]",
  loader: { ".woff2": "file" },
  plugins: [woff2Only, oneKatex],
  metafile: true,
  logLevel: "warning",
});
// `node build.mjs --analyze`: what each library adds to the bundle.
if (process.argv.includes("--analyze")) console.log(await esbuild.analyzeMetafile(page.metafile));
// Runs before the stylesheet applies, so a light theme never flashes dark (a classic
// script: it blocks rendering, which is the point).
await esbuild.build({
  entryPoints: { theme: "src/theme-init.js" },
  bundle: true,
  format: "iife",
  minify: true,
  outdir: OUT,
  logLevel: "warning",
});
await copyFile("src/index.html", `${OUT}/index.html`);

for (const name of ["index.html", "theme.js", "app.js", "style.css"]) {
  const body = await readFile(`${OUT}/${name}`);
  const kib = (bytes) => `${(bytes / 1024).toFixed(1)} KiB`;
  console.log(`${name.padEnd(11)} ${kib(body.length).padStart(10)}  gzip ${kib(gzipSync(body, { level: 9 }).length)}`);
}
const fonts = await readdir(`${OUT}/fonts`);
let fontBytes = 0;
for (const font of fonts) fontBytes += (await stat(`${OUT}/fonts/${font}`)).size;
console.log(`fonts/      ${(fontBytes / 1024).toFixed(1)} KiB in ${fonts.length} woff2 files`);
