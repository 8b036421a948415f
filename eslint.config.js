// ESLint for static/js: plain ES modules the browser loads as they are (no build step). `make lint-js`.
// This file is CommonJS: package.json declares no "type", so Node reads a .js file as CommonJS.
const js = require("@eslint/js");
const globals = require("globals");

module.exports = [
  { ignores: ["static/vendor/", "node_modules/"] },
  js.configs.recommended,
  {
    files: ["static/js/**/*.js"],
    languageOptions: { ecmaVersion: "latest", sourceType: "module", globals: globals.browser },
    // `const { dropped: _x, ...rest } = obj` is how the code leaves keys out of an object.
    rules: { "no-unused-vars": ["error", { ignoreRestSiblings: true }] },
  },
  {
    files: ["eslint.config.js"],
    languageOptions: { sourceType: "commonjs", globals: globals.node },
  },
];
