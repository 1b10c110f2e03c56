// Progressive enhancement only: everything works without this file.
document.documentElement.classList.add("js");
// A quantity changes as soon as it is chosen (the Update button is the no-JS path).
for (const select of document.querySelectorAll("select[data-autosubmit]")) {
  select.addEventListener("change", () => select.form.requestSubmit());
}
// A page that waits for something in the background (the payment being prepared) looks again
// by itself; without JavaScript its Refresh link does the same.
const poll = document.querySelector("[data-poll]");
if (poll) setTimeout(() => window.location.reload(), Number(poll.dataset.poll) || 2000);
