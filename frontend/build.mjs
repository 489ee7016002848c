// Copies the installed assets into the Python package, where `allo serve` serves them.
// Run `npm ci && npm run build` here after changing package.json; the copies are committed
// so that installing Allo needs no Node.js.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "src", "allo", "web", "static", "vendor");
const assets = [["htmx.org/dist/htmx.min.js", "htmx.min.js"]];

mkdirSync(vendor, { recursive: true });
for (const [from, to] of assets) {
  copyFileSync(join(here, "node_modules", from), join(vendor, to));
  console.log(`${from} -> src/allo/web/static/vendor/${to}`);
}
