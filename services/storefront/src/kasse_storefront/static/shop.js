// Progressive enhancement only: everything works without this file.
document.documentElement.classList.add("js");
// A quantity changes as soon as it is chosen (the Update button is the no-JS path).
for (const select of document.querySelectorAll("select[data-autosubmit]")) {
  select.addEventListener("change", () => select.form.requestSubmit());
}
