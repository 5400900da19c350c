// Light or dark: the system's choice (prefers-color-scheme) unless the
// user picked one with the top bar's toggle, kept in localStorage.

const THEME_KEY = "tagrate.theme";

const systemDark = () => window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;

/** The theme in use: "dark" or "light". */
export const currentTheme = () => document.documentElement.dataset.theme || (systemDark() ? "dark" : "light");

export function applyTheme() {
  const chosen = localStorage.getItem(THEME_KEY);
  if (chosen === "dark" || chosen === "light") document.documentElement.dataset.theme = chosen;
  else delete document.documentElement.dataset.theme;
}

export function toggleTheme() {
  localStorage.setItem(THEME_KEY, currentTheme() === "dark" ? "light" : "dark");
  applyTheme();
}
