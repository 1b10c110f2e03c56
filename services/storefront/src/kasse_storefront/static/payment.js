// Stripe's Payment Element: the card data goes from the browser to Stripe, never through Kasse.
(function () {
  const form = document.getElementById("payment-form");
  if (!form || typeof Stripe === "undefined") return;
  const stripe = Stripe(form.dataset.stripeKey);
  const elements = stripe.elements({ clientSecret: form.dataset.clientSecret });
  elements.create("payment").mount("#payment-element");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const returnUrl = new URL(form.dataset.returnUrl, window.location.href).href;
    const { error } = await stripe.confirmPayment({ elements, confirmParams: { return_url: returnUrl } });
    if (error) document.getElementById("payment-message").textContent = error.message;
  });
})();
