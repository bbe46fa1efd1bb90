// Bundles entry.js into web/static/vendor/age-encryption.js and writes, beside it, the
// licence of every npm package that ends up in the bundle (read from esbuild's metafile).
// Deterministic: the same package-lock.json gives byte-identical files.
import { readFileSync, writeFileSync, readdirSync, rmSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, "..", "static", "vendor");
const outFile = "age-encryption.js";

const pkg = (dir) => JSON.parse(readFileSync(join(here, dir, "package.json"), "utf8"));
const age = pkg("node_modules/age-encryption");

const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: ["entry.js"],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  legalComments: "eof",
  charset: "ascii",
  write: false,
  metafile: true,
  logLevel: "warning",
  banner: {
    js:
      `/* age-encryption ${age.version} (https://github.com/FiloSottile/typage) with its dependencies and ` +
      `@scure/base's bech32, bundled by web/vendor-src/build.sh (esbuild ${esbuild.version}). ` +
      `Generated: do not edit. Licences: LICENSE-*.txt beside this file. */`,
  },
});

// Which packages (name → versions → directory) made it into the bundle.
const bundled = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const m = input.match(/^(.*node_modules\/((?:@[^/]+\/)?[^/]+))\//);
  if (!m) continue; // our own entry.js
  const [, dir, name] = m;
  const { version } = pkg(dir);
  if (!bundled.has(name)) bundled.set(name, new Map());
  bundled.get(name).set(version, dir);
}

mkdirSync(outDir, { recursive: true });
for (const f of readdirSync(outDir)) {
  if (f === outFile || f.startsWith("LICENSE-")) rmSync(join(outDir, f));
}
writeFileSync(join(outDir, outFile), result.outputFiles[0].contents);

const licenceFile = (dir) => {
  const f = readdirSync(join(here, dir)).find((n) => /^licen[cs]e(\.md|\.txt)?$/i.test(n));
  if (!f) throw new Error(`${dir}: no LICENSE file; cannot ship it`);
  return readFileSync(join(here, dir, f), "utf8").trimEnd() + "\n";
};
for (const name of [...bundled.keys()].sort()) {
  const versions = [...bundled.get(name).entries()].sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }));
  const texts = new Map(); // licence text → versions carrying it
  for (const [version, dir] of versions) {
    const t = licenceFile(dir);
    texts.set(t, [...(texts.get(t) ?? []), version]);
  }
  const spdx = pkg(versions[0][1]).license;
  let out = `${name} ${versions.map(([v]) => v).join(", ")} (${spdx}), bundled into ${outFile}.\n`;
  for (const [text, vs] of texts) {
    if (texts.size > 1) out += `\n--- ${name} ${vs.join(", ")} ---\n`;
    out += "\n" + text;
  }
  writeFileSync(join(outDir, `LICENSE-${name.replace(/^@/, "").replace("/", "-")}.txt`), out);
}

const size = result.outputFiles[0].contents.length;
console.log(`wrote ${outFile} (${size} bytes) and licences for: ${[...bundled.keys()].sort().join(", ")}`);
if (!existsSync(join(outDir, "LICENSE-age-encryption.txt"))) throw new Error("age-encryption licence missing");
