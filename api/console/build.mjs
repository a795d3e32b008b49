// Copies the third-party files the console loads from node_modules into build/vendor/
// (gitignored): no third-party code is committed, and `npm ci` + this is the whole build.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const files = {
  "xterm.js": "@xterm/xterm/lib/xterm.js",
  "xterm.css": "@xterm/xterm/css/xterm.css",
  "addon-fit.js": "@xterm/addon-fit/lib/addon-fit.js",
};
const out = join(here, "build", "vendor");
mkdirSync(out, { recursive: true });
for (const [name, from] of Object.entries(files)) {
  copyFileSync(join(here, "node_modules", from), join(out, name));
}
console.log(`console vendor files in ${out}: ${Object.keys(files).join(", ")}`);
