# Reference fits of lme4 for tests/test_mixed_lme4.py, the way statsmodels tests its MixedLM
# against lme4: the data and lme4's estimates are committed as small CSV files, so the tests run
# without R. Regenerate (R with lme4 installed) from the repository root:
#
#     Rscript benchmarks/lme4/make_fixtures.R
#
# Fixtures written to tests/fixtures/lme4/, for each NAME:
#   NAME.csv       the data
#   NAME_lme4.csv  lme4's fit, one value a row (kind, name, value): fixed effects ("fixef"), their
#                  standard errors ("se", lme4's sqrt(diag(vcov))), variance components
#                  ("variance", with the residual), the REML criterion or deviance ("criterion"),
#                  the log-likelihood ("loglik"), the relative factors ("theta") and the versions.

suppressMessages(library(lme4))
out <- file.path("tests", "fixtures", "lme4")
dir.create(out, recursive = TRUE, showWarnings = FALSE)

# lme4's default optimiser stops at about 1e-6 relative in small variances; the fixtures are
# references, so BOBYQA runs to a much smaller trust radius.
control <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))

write_fit <- function(name, formula, data, reml) {
  fit <- lmer(formula, data = data, REML = reml, control = control)
  vc <- as.data.frame(VarCorr(fit))
  terms <- sub("(Intercept)", "Intercept", names(fixef(fit)), fixed = TRUE)
  p <- length(terms)
  table <- data.frame(
    kind = c(rep("fixef", p), rep("se", p), rep("variance", nrow(vc)), "criterion", "loglik",
             rep("theta", length(getME(fit, "theta"))), "version", "version"),
    name = c(terms, terms, vc$grp, if (reml) "REML" else "deviance", "logLik",
             names(getME(fit, "theta")), "R", "lme4"),
    value = c(format(fixef(fit), digits = 17), format(sqrt(diag(as.matrix(vcov(fit)))), digits = 17),
              format(vc$vcov, digits = 17),
              format(if (reml) REMLcrit(fit) else deviance(fit), digits = 17),
              format(as.numeric(logLik(fit)), digits = 17),
              format(getME(fit, "theta"), digits = 17),
              paste(R.version$major, R.version$minor, sep = "."), as.character(packageVersion("lme4"))))
  write.csv(table, file.path(out, paste0(name, "_lme4.csv")), row.names = FALSE)
}

# (a) InstEval, the ratings of 150 students drawn at random (about 3,700 rows), so that the
# fixture stays small while keeping three crossed factors of very different sizes.
set.seed(20240)
data(InstEval)
students <- sample(levels(InstEval$s), 150)
insteval <- droplevels(InstEval[InstEval$s %in% students, c("s", "d", "dept", "service", "y")])
insteval$service <- as.numeric(as.character(insteval$service))
write.csv(insteval, file.path(out, "insteval_subset.csv"), row.names = FALSE)
write_fit("insteval_subset", y ~ service + (1 | s) + (1 | d) + (1 | dept), insteval, TRUE)

# (b) A small many-mix transfer grid: 120 mixes, each evaluated (one seed) on all 8 languages of
# one or two of 5 target tasks; diversity and volume vary between mixes.
set.seed(20241)
n_mixes <- 120; n_targets <- 5; n_languages <- 8
tasks <- 2^sample(0:3, n_mixes, replace = TRUE)
examples <- 1000 * 2^sample(0:4, n_mixes, replace = TRUE)
diversity <- log2(tasks) - mean(log2(tasks))
volume <- log2(examples) - mean(log2(examples))
u_mix <- rnorm(n_mixes, 0, 1)
u_target <- rnorm(n_targets, 0, 4)
u_language <- matrix(rnorm(n_targets * n_languages, 0, 2), n_targets)
rows <- list()
for (m in seq_len(n_mixes)) {
  for (t in sample(n_targets, 1 + (runif(1) < 0.6))) {
    lang <- seq_len(n_languages)
    rows[[length(rows) + 1]] <- data.frame(
      mix = sprintf("m%03d", m), target_task = sprintf("t%d", t),
      target_language = sprintf("t%d:l%02d", t, lang), diversity = diversity[m], volume = volume[m],
      score = 50 + 1.0 * diversity[m] + 0.5 * volume[m] + u_target[t] + u_language[t, lang] +
        u_mix[m] + rnorm(n_languages, 0, 2))
  }
}
grid <- do.call(rbind, rows)
write.csv(grid, file.path(out, "many_mix_grid.csv"), row.names = FALSE)
grid_formula <- score ~ diversity + volume + (1 | target_task) + (1 | target_language) + (1 | mix)
write_fit("many_mix_grid", grid_formula, grid, TRUE)
write_fit("many_mix_grid_ml", grid_formula, grid, FALSE)

# (c) The shipped language-mix example (examples/language_mix.csv: source languages instead of
# intermediate tasks, no baseline, one seed), derived here independently of transferstats the way
# docs/statistics.md describes it: each target's headline metric (exact_match is the second QA
# metric), zero-shot rows (English left out), outcome the score; diversity and volume log2 of the
# number of languages and of the examples, centred at their mean over mixes, and their product;
# target_in_mix the share of the mix's examples in the evaluated language, centred at its mean
# over rows. The model is analyze's plain model with that covariate.
example <- read.csv(file.path("examples", "language_mix.csv"), colClasses = c(mix_tasks = "character"))
example <- example[example$metric != "exact_match" & example$language != "en", ]
members <- strsplit(example$mix_tasks, "+", fixed = TRUE)
count_of <- function(parts) as.numeric(sub(".*=", "", parts))
n_languages <- sapply(members, length)
examples <- sapply(members, function(parts) sum(count_of(parts)))
in_mix <- mapply(function(parts, language) {
  codes <- sub("=.*", "", parts)
  sum(count_of(parts)[codes == language]) / sum(count_of(parts))
}, members, example$language)
per_mix <- !duplicated(example$mix)
language_mix <- data.frame(
  score = example$value, mix = example$mix, target_task = example$target_task,
  target_language = paste0(example$target_task, ":", example$language),
  diversity = log2(n_languages) - mean(log2(n_languages[per_mix])),
  volume = log2(examples) - mean(log2(examples[per_mix])),
  target_in_mix = in_mix - mean(in_mix))
language_mix[["diversity:volume"]] <- language_mix$diversity * language_mix$volume
write.csv(language_mix, file.path(out, "language_mix.csv"), row.names = FALSE)
write_fit("language_mix", score ~ diversity * volume + target_in_mix + (1 | target_task) +
            (1 | target_language) + (1 | mix), language_mix, TRUE)
