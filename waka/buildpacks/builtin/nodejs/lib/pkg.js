// Helpers for the Node.js buildpack, run with the stack's node:
//   pkg.js check DIR              package.json parses as an object
//   pkg.js engines DIR            warn when engines.node doesn't match this node
//   pkg.js key NPM_VERSION DIR    the node_modules cache key
//   pkg.js has-script NAME DIR    exit 0 when scripts.NAME exists
//   pkg.js has-dev-dependencies DIR
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

function fail(message) {
  console.log(` !     ${message}`);
  process.exit(1);
}

function readPackage(dir) {
  let pkg;
  try {
    pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  } catch (error) {
    fail(`package.json could not be read: ${error.message}`);
  }
  if (!pkg || typeof pkg !== "object" || Array.isArray(pkg)) fail("package.json is not an object");
  return pkg;
}

// npm's own copy of semver (or Debian's); none is fine, the check is only advice.
function loadSemver() {
  const candidates = ["semver", "/usr/share/nodejs/semver"];
  for (const dir of (process.env.PATH || "").split(":")) {
    try {
      const cli = fs.realpathSync(path.join(dir, "npm"));
      candidates.push(path.join(path.dirname(cli), "..", "node_modules", "semver"));
    } catch (_) {}
  }
  for (const candidate of candidates) {
    try {
      return require(candidate);
    } catch (_) {}
  }
  return null;
}

function engines(pkg) {
  const range = pkg.engines && pkg.engines.node;
  if (!range) return;
  const semver = loadSemver();
  if (!semver) {
    console.log(`       engines.node asks for ${range}; not checked (no semver here)`);
  } else if (!semver.satisfies(process.version, range)) {
    // A warning block of its own (a blank line after it): a failure later in the build has
    // its own reason, which the build's summary line must not run together with this.
    console.log(
      ` !     package.json asks for Node.js ${range} (engines.node), but this stack has ` +
        `${process.version}; building with it anyway (the stack cannot install other versions).\n`,
    );
  }
}

function key(pkg, npmVersion, dir) {
  const hash = crypto.createHash("sha256");
  hash.update(`waka-nodejs-1 ${process.version} ${npmVersion} ${process.platform} ${process.arch}\0`);
  const fields = ["dependencies", "devDependencies", "optionalDependencies", "peerDependencies",
    "bundleDependencies", "overrides", "workspaces"];
  hash.update(JSON.stringify(fields.map((field) => pkg[field] ?? null)));
  for (const lock of ["npm-shrinkwrap.json", "package-lock.json"]) {
    const file = path.join(dir, lock);
    if (fs.existsSync(file)) hash.update(`\0${lock}\0`).update(fs.readFileSync(file));
  }
  return hash.digest("hex");
}

const [command, ...args] = process.argv.slice(2);
const dir = args[args.length - 1];
const pkg = readPackage(dir);
const scripts = pkg.scripts && typeof pkg.scripts === "object" ? pkg.scripts : {};
switch (command) {
  case "check":
    break;
  case "engines":
    engines(pkg);
    break;
  case "key":
    console.log(key(pkg, args[0], dir));
    break;
  case "has-script":
    process.exit(typeof scripts[args[0]] === "string" && scripts[args[0]].trim() ? 0 : 1);
  case "has-dev-dependencies":
    process.exit(Object.keys(pkg.devDependencies || {}).length > 0 ? 0 : 1);
  default:
    console.error(`usage: pkg.js check|engines|key|has-script|has-dev-dependencies ... DIR`);
    process.exit(2);
}
